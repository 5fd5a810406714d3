//! AKS: the resource group (created when absent), the managed cluster with one system agent
//! pool and a system-assigned identity, and Kubernetes access from listClusterUserCredential.

use base64::Engine;
use kdeploy_provider::{AttrPath, ErrorKind, PlanResponse, ProviderError, Value};
use serde_json::{Value as Json, json};

use crate::arm::{API_MANAGED_CLUSTERS, API_RESOURCE_GROUPS, Arm};
use crate::util::{Attrs, arm_tags, attrs, invalid, keep, live_tags, n, name_from_address, s, same, same_location};

/// Inputs AKS cannot change in place.
pub const AKS_REPLACE: &[&str] = &["resource_group", "location", "name", "vm_size"];
/// Changed in place by PUTting the managed cluster again: `version`, `node_count`, `tags`.
pub const AKS_IN_PLACE: &[&str] = &["version", "node_count", "tags"];
/// The system agent pool's name.
pub const POOL: &str = "system";
/// Computed attributes of an AKS cluster.
pub const COMPUTED: &[&str] = &["endpoint", "id", "certificate_authority", "token_source"];

/// The cluster name in effect: `name`, or the block label.
pub fn cluster_name(address: &str, m: &Attrs) -> String {
    s(m, "name").unwrap_or_else(|| name_from_address(address))
}

/// The resource group in effect: `resource_group`, or `kdeploy-<cluster name>`.
pub fn resource_group(address: &str, m: &Attrs) -> String {
    s(m, "resource_group").unwrap_or_else(|| format!("kdeploy-{}", cluster_name(address, m)))
}

pub fn rg_path(arm: &Arm, rg: &str) -> String {
    format!("{}/resourcegroups/{rg}", arm.sub())
}

pub fn cluster_path(arm: &Arm, rg: &str, name: &str) -> String {
    format!("{}/resourceGroups/{rg}/providers/Microsoft.ContainerService/managedClusters/{name}", arm.sub())
}

/// (resource group, name) from an ARM id `/subscriptions/s/resourceGroups/rg/providers/.../name`.
pub fn parse_id(id: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = id.trim_matches('/').split('/').collect();
    let rg = parts.iter().position(|p| p.eq_ignore_ascii_case("resourceGroups")).and_then(|i| parts.get(i + 1))?;
    Some((rg.to_string(), parts.last()?.to_string()))
}

fn locate(address: &str, m: &Attrs) -> (String, String) {
    s(m, "id").and_then(|id| parse_id(&id)).unwrap_or_else(|| (resource_group(address, m), cluster_name(address, m)))
}

/// Plans an AKS cluster: validation, replacement rules and computed attributes.
pub fn plan(address: &str, desired: &Value, prior: Option<&Value>) -> Result<PlanResponse, ProviderError> {
    let mut planned = attrs(Some(desired));
    let prior_map = prior.map(|p| attrs(Some(p)));
    let prior = prior_map.as_ref();
    if let Some(c) = n(&planned, "node_count")
        && !(1..=1000).contains(&c)
    {
        return Err(invalid(address, format!("node_count must be between 1 and 1000 (the system node pool needs a node), got {c}")));
    }
    if let Some(v) = s(&planned, "version") {
        let parts: Vec<&str> = v.split('.').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit())) {
            return Err(invalid(address, format!("version must look like \"1.30\" or \"1.30.3\", got {v:?}")));
        }
    }
    let mut requires_replace = Vec::new();
    if let Some(p) = prior {
        for k in AKS_REPLACE {
            let changed = match (p.get(*k).and_then(Value::as_str), planned.get(*k).and_then(Value::as_str)) {
                (Some(a), Some(b)) if *k == "location" => !same_location(a, b),
                (Some(a), Some(b)) if *k == "vm_size" => !a.eq_ignore_ascii_case(b),
                _ => !same(p.get(*k), planned.get(*k)),
            };
            if changed {
                requires_replace.push(AttrPath::attr(k));
            }
        }
    }
    let fresh = prior.is_none() || !requires_replace.is_empty();
    for k in ["endpoint", "id", "certificate_authority"] {
        let v = if fresh { Value::Unknown(format!("{address}.{k}")) } else { keep(prior, address, k) };
        planned.insert(k.into(), v);
    }
    planned.insert("token_source".into(), Value::string("aks"));
    Ok(PlanResponse { planned: Value::Map(planned), requires_replace, warnings: Vec::new() })
}

fn system_pool(live: &Json) -> Option<&Json> {
    let pools = live["properties"]["agentPoolProfiles"].as_array()?;
    pools.iter().find(|p| p["mode"] == "System").or_else(|| pools.first())
}

/// Reads one cluster: `None` when it is gone (or being deleted).
pub async fn read(arm: &Arm, address: &str, recorded: &Attrs) -> Result<Option<Attrs>, ProviderError> {
    let (rg, name) = locate(address, recorded);
    let Some(live) = arm.get(&cluster_path(arm, &rg, &name), API_MANAGED_CLUSTERS, &format!("{address}: reading AKS cluster {name}")).await? else {
        return Ok(None);
    };
    if live["properties"]["provisioningState"] == "Deleting" {
        return Ok(None);
    }
    let mut a = recorded.clone();
    if let Some(loc) = live["location"].as_str()
        && !s(recorded, "location").is_some_and(|r| same_location(&r, loc))
    {
        a.insert("location".into(), Value::string(loc));
    }
    if s(recorded, "version").is_some()
        && let Some(v) = live["properties"]["kubernetesVersion"].as_str()
    {
        a.insert("version".into(), Value::string(v));
    }
    if let Some(pool) = system_pool(&live) {
        if let Some(c) = pool["count"].as_i64() {
            a.insert("node_count".into(), Value::from_i64(c));
        }
        if let Some(vm) = pool["vmSize"].as_str()
            && !s(recorded, "vm_size").is_some_and(|r| r.eq_ignore_ascii_case(vm))
        {
            a.insert("vm_size".into(), Value::string(vm));
        }
    }
    a.insert("tags".into(), live_tags(live.get("tags"), recorded.get("tags")));
    if let Some(id) = live["id"].as_str() {
        a.insert("id".into(), Value::string(id));
    }
    if let Some(fqdn) = live["properties"]["fqdn"].as_str().or(live["properties"]["privateFQDN"].as_str()) {
        a.insert("endpoint".into(), Value::string(test_endpoint().unwrap_or_else(|| format!("https://{fqdn}:443"))));
    }
    a.insert("token_source".into(), Value::string("aks"));
    Ok(Some(a))
}

/// TEST ONLY: `KDEPLOY_TEST_AKS_ENDPOINT` replaces the API server endpoint reported for every AKS
/// cluster (and clears the CA), so that the in-cluster phase can run against a local test API
/// server while the ARM calls go to a mock. Never set it against real Azure.
pub const TEST_AKS_ENDPOINT_ENV: &str = "KDEPLOY_TEST_AKS_ENDPOINT";

fn test_endpoint() -> Option<String> {
    kdeploy_provider::test_endpoint(TEST_AKS_ENDPOINT_ENV)
}

/// Creates the resource group when absent.
pub async fn ensure_resource_group(arm: &Arm, address: &str, rg: &str, location: &str, planned: &Attrs) -> Result<(), ProviderError> {
    let what = format!("{address}: resource group {rg}");
    if arm.get(&rg_path(arm, rg), API_RESOURCE_GROUPS, &what).await?.is_some() {
        return Ok(());
    }
    (arm.progress)(&format!("{what}: creating in {location}"));
    let body = json!({ "location": location, "tags": arm_tags(planned, address) });
    arm.put(&rg_path(arm, rg), API_RESOURCE_GROUPS, &body, &what).await.map(|_| ())
}

/// The managed cluster's PUT body.
pub fn cluster_body(address: &str, name: &str, planned: &Attrs) -> Json {
    let mut props = json!({
        "dnsPrefix": name,
        "agentPoolProfiles": [{
            "name": POOL,
            "mode": "System",
            "count": n(planned, "node_count").unwrap_or(2),
            "vmSize": s(planned, "vm_size").unwrap_or_else(|| "Standard_D2s_v3".into()),
            "osType": "Linux",
            "type": "VirtualMachineScaleSets",
        }],
        "enableRBAC": true,
    });
    if let Some(v) = s(planned, "version") {
        props["kubernetesVersion"] = v.into();
    }
    json!({
        "location": s(planned, "location").unwrap_or_default(),
        "tags": arm_tags(planned, address),
        "identity": { "type": "SystemAssigned" },
        "properties": props,
    })
}

/// Creates or updates the cluster and returns its attributes (fully known).
pub async fn apply(arm: &Arm, address: &str, planned: &Attrs) -> Result<Attrs, ProviderError> {
    let location = s(planned, "location").ok_or_else(|| invalid(address, "location is required"))?;
    let (rg, name) = (resource_group(address, planned), cluster_name(address, planned));
    ensure_resource_group(arm, address, &rg, &location, planned).await?;
    let what = format!("{address}: AKS cluster {name}");
    (arm.progress)(&format!("{what}: creating or updating (this takes several minutes)"));
    let live = arm.put(&cluster_path(arm, &rg, &name), API_MANAGED_CLUSTERS, &cluster_body(address, &name, planned), &what).await?;
    let kube = user_kubeconfig(arm, &rg, &name, &what).await?;
    let mut a = planned.clone();
    let id = live["id"].as_str().map(str::to_string).unwrap_or_else(|| cluster_path(arm, &rg, &name));
    a.insert("id".into(), Value::string(id));
    let endpoint = match live["properties"]["fqdn"].as_str() {
        Some(f) => format!("https://{f}:443"),
        None => kube.server.clone(),
    };
    let (endpoint, ca) = match test_endpoint() {
        Some(test) => (test, String::new()),
        None => (endpoint, kube.certificate_authority),
    };
    a.insert("endpoint".into(), Value::string(endpoint));
    a.insert("certificate_authority".into(), Value::string(ca));
    a.insert("token_source".into(), Value::string("aks"));
    Ok(a)
}

/// Deletes the cluster and waits until it is gone. The resource group stays.
pub async fn delete(arm: &Arm, address: &str, prior: &Attrs) -> Result<(), ProviderError> {
    let (rg, name) = locate(address, prior);
    let what = format!("{address}: deleting AKS cluster {name}");
    (arm.progress)(&format!("{what} (this takes several minutes)"));
    arm.delete(&cluster_path(arm, &rg, &name), API_MANAGED_CLUSTERS, &what).await
}

/// What kdeploy takes from the cluster-user kubeconfig.
#[derive(Debug, Clone, PartialEq)]
pub struct UserKubeconfig {
    pub server: String,
    /// Base64 PEM, as in the kubeconfig.
    pub certificate_authority: String,
    /// The user's bearer token (local accounts); None for Entra ID clusters (exec plugin).
    pub token: Option<String>,
}

/// Parses a kubeconfig (YAML) from listClusterUserCredential.
pub fn parse_kubeconfig(yaml: &str) -> Result<UserKubeconfig, ProviderError> {
    let doc: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(|e| ProviderError::other(format!("the AKS kubeconfig is not valid YAML: {e}")))?;
    let cluster = &doc["clusters"][0]["cluster"];
    let server = cluster["server"].as_str().ok_or_else(|| ProviderError::other("the AKS kubeconfig has no clusters[0].cluster.server"))?;
    let ca = cluster["certificate-authority-data"].as_str().unwrap_or_default();
    let token = doc["users"][0]["user"]["token"].as_str().map(str::to_string);
    Ok(UserKubeconfig { server: server.to_string(), certificate_authority: ca.to_string(), token })
}

/// POST listClusterUserCredential and parse the first kubeconfig.
pub async fn user_kubeconfig(arm: &Arm, rg: &str, name: &str, what: &str) -> Result<UserKubeconfig, ProviderError> {
    let path = format!("{}/listClusterUserCredential", cluster_path(arm, rg, name));
    let out = arm.post(&path, API_MANAGED_CLUSTERS, &format!("{what}: listClusterUserCredential")).await?;
    let b64 =
        out["kubeconfigs"][0]["value"].as_str().ok_or_else(|| ProviderError::other(format!("{what}: listClusterUserCredential returned no kubeconfig")))?;
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|e| ProviderError::other(format!("{what}: the kubeconfig is not base64: {e}")))?;
    parse_kubeconfig(&String::from_utf8_lossy(&bytes))
}

/// The "aks" token source: a fresh cluster-user token per call.
pub struct AksTokenSource {
    pub(crate) arm: crate::Lazy,
}

#[async_trait::async_trait]
impl kdeploy_provider::TokenSource for AksTokenSource {
    async fn token(&self, cluster: &Value) -> Result<String, ProviderError> {
        let arm = self.arm.get()?;
        let m = attrs(Some(cluster));
        let (rg, name) = s(&m, "id")
            .and_then(|id| parse_id(&id))
            .ok_or_else(|| ProviderError::new(ErrorKind::Invalid, "the AKS cluster's attributes have no id; apply the cluster first"))?;
        let kube = user_kubeconfig(&arm, &rg, &name, &format!("AKS cluster {name}")).await?;
        kube.token.ok_or_else(|| {
            ProviderError::new(ErrorKind::Unauthorized, format!("AKS cluster {name} uses Microsoft Entra ID authentication (its kubeconfig has an exec plugin, no token); kdeploy supports local-account clusters only for now"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(count: i64, location: &str) -> Value {
        Value::Map(
            [
                ("location", Value::string(location)),
                ("node_count", Value::from_i64(count)),
                ("vm_size", Value::string("Standard_D2s_v3")),
                ("name", Value::Null),
                ("resource_group", Value::Null),
                ("version", Value::Null),
                ("tags", Value::Null),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        )
    }

    fn applied(planned: &Value) -> Value {
        let mut m = attrs(Some(planned));
        for (k, v) in [
            ("endpoint", "https://x:443"),
            ("id", "/subscriptions/s/resourceGroups/kdeploy-cloud/providers/Microsoft.ContainerService/managedClusters/cloud"),
            ("certificate_authority", "Q0E="),
        ] {
            m.insert(k.into(), Value::string(v));
        }
        Value::Map(m)
    }

    #[test]
    fn plan_rules() {
        let first = plan("cluster.cloud", &desired(2, "westeurope"), None).unwrap();
        let p = first.planned.as_map().unwrap();
        assert!(p["endpoint"].is_unknown() && p["id"].is_unknown());
        assert_eq!(p["token_source"], Value::string("aks"));
        let live = applied(&first.planned);
        let again = plan("cluster.cloud", &desired(2, "westeurope"), Some(&live)).unwrap();
        assert_eq!(again.planned, live);
        let spaced = plan("cluster.cloud", &desired(2, "West Europe"), Some(&live)).unwrap();
        assert!(spaced.requires_replace.is_empty());
        let scaled = plan("cluster.cloud", &desired(3, "westeurope"), Some(&live)).unwrap();
        assert!(scaled.requires_replace.is_empty());
        let moved = plan("cluster.cloud", &desired(2, "northeurope"), Some(&live)).unwrap();
        assert_eq!(moved.requires_replace, vec![AttrPath::attr("location")]);
        assert!(moved.planned.as_map().unwrap()["endpoint"].is_unknown());
        assert!(plan("cluster.cloud", &desired(0, "westeurope"), None).is_err());
    }

    #[test]
    fn ids_and_kubeconfigs() {
        assert_eq!(parse_id("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c"), Some(("rg".into(), "c".into())));
        let k = parse_kubeconfig("apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0E=\n    server: https://c.hcp.westeurope.azmk8s.io:443\n  name: c\nusers:\n- name: u\n  user:\n    token: abc\n").unwrap();
        assert_eq!(k.server, "https://c.hcp.westeurope.azmk8s.io:443");
        assert_eq!(k.certificate_authority, "Q0E=");
        assert_eq!(k.token.as_deref(), Some("abc"));
    }
}

//! GKE: the cluster and its `default` node pool through container.googleapis.com/v1
//! (`projects.locations.clusters`, `.nodePools` and `.operations`).

use std::time::Instant;

use kdeploy_provider::{ErrorKind, ProviderError, Value};
use reqwest::Method;
use serde_json::{Value as Json, json};

use crate::Shared;
use crate::http::CallError;
use crate::plan::{NODE_POOL, TOKEN_SOURCE, gke_name};
use crate::util::{Attrs, attrs, enc, n, s};

/// Where one cluster lives.
#[derive(Debug, Clone)]
pub struct ClusterId {
    pub project: String,
    pub location: String,
    pub name: String,
}

impl ClusterId {
    /// From planned, prior or recorded attributes.
    pub fn from_attrs(address: &str, a: &Attrs) -> Result<ClusterId, ProviderError> {
        let need = |k: &str| s(a, k).ok_or_else(|| ProviderError::new(ErrorKind::Invalid, format!("{address}: `{k}` must be known")));
        let name = s(a, "cluster_name")
            .or_else(|| gke_name(address, a).as_str().map(str::to_string))
            .ok_or_else(|| ProviderError::new(ErrorKind::Invalid, format!("{address}: `name` must be known")))?;
        Ok(ClusterId { project: need("project")?, location: need("location")?, name })
    }

    fn parent(&self, base: &str) -> String {
        format!("{base}/v1/projects/{}/locations/{}", enc(&self.project), enc(&self.location))
    }

    pub fn url(&self, base: &str) -> String {
        format!("{}/clusters/{}", self.parent(base), enc(&self.name))
    }

    pub fn pool_url(&self, base: &str) -> String {
        format!("{}/nodePools/{NODE_POOL}", self.url(base))
    }
}

fn what(address: &str, action: &str, id: &ClusterId) -> String {
    format!("{address}: {action} GKE cluster {} in {}/{}", id.name, id.project, id.location)
}

/// The live cluster, or None when it does not exist.
pub async fn get_cluster(sh: &Shared, address: &str, id: &ClusterId) -> Result<Option<Json>, ProviderError> {
    sh.api.get_opt(&id.url(&sh.config.container_url)).await.map_err(|e| e.into_provider(&what(address, "reading", id)))
}

/// Reads one recorded cluster; None when it is gone (or being deleted).
pub async fn read(sh: &Shared, address: &str, recorded: &Attrs) -> Result<Option<Attrs>, ProviderError> {
    let id = ClusterId::from_attrs(address, recorded)?;
    match get_cluster(sh, address, &id).await? {
        Some(c) if c["status"].as_str() != Some("STOPPING") => Ok(Some(live_attrs(&id, &c, recorded))),
        _ => Ok(None),
    }
}

/// True when the stack's `version` ("1.31") names the live one ("1.31.5-gke.1234000").
pub fn version_matches(wanted: &str, live: &str) -> bool {
    wanted == "latest" || live == wanted || live.strip_prefix(wanted).is_some_and(|rest| rest.starts_with(['.', '-']))
}

fn pool(cluster: &Json) -> Option<&Json> {
    cluster["nodePools"].as_array()?.iter().find(|p| p["name"] == NODE_POOL)
}

fn num(v: &Json) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// The attributes of a live cluster, shaped like the planned ones. Inputs the API does not
/// echo (`name` left unset, a `version` prefix) keep their recorded form.
pub fn live_attrs(id: &ClusterId, cluster: &Json, recorded: &Attrs) -> Attrs {
    let mut a = recorded.clone();
    a.insert("project".into(), Value::string(&id.project));
    a.insert("location".into(), Value::String(cluster["location"].as_str().unwrap_or(&id.location).to_string()));
    a.insert("cluster_name".into(), Value::String(cluster["name"].as_str().unwrap_or(&id.name).to_string()));
    if let Some(live) = cluster["currentMasterVersion"].as_str() {
        match s(recorded, "version") {
            Some(w) if version_matches(&w, live) => {}
            Some(_) => {
                a.insert("version".into(), Value::string(live));
            }
            None => {}
        }
    }
    let endpoint =
        cluster["endpoint"].as_str().filter(|e| !e.is_empty()).map(|e| if e.starts_with("https://") { e.to_string() } else { format!("https://{e}") });
    let ca = cluster["masterAuth"]["clusterCaCertificate"].as_str().map(str::to_string);
    // TEST ONLY: see TEST_GKE_ENDPOINT_ENV.
    let (endpoint, ca) = match kdeploy_provider::test_endpoint(TEST_GKE_ENDPOINT_ENV) {
        Some(test) if endpoint.is_some() => (Some(test), Some(String::new())),
        _ => (endpoint, ca),
    };
    a.insert("endpoint".into(), endpoint.map(Value::String).unwrap_or(Value::Null));
    a.insert("certificate_authority".into(), ca.map(Value::String).unwrap_or(Value::Null));
    a.insert("token_source".into(), Value::string(TOKEN_SOURCE));
    if let Some(p) = pool(cluster) {
        if let Some(mt) = p["config"]["machineType"].as_str() {
            a.insert("machine_type".into(), Value::string(mt));
        }
        let auto = &p["autoscaling"];
        if auto["enabled"].as_bool() == Some(true) {
            a.insert("min_nodes".into(), num(&auto["minNodeCount"]).map(Value::from_i64).unwrap_or(Value::Null));
            a.insert("max_nodes".into(), num(&auto["maxNodeCount"]).map(Value::from_i64).unwrap_or(Value::Null));
            // The autoscaler owns the node count: keep the recorded one.
        } else {
            a.insert("min_nodes".into(), Value::Null);
            a.insert("max_nodes".into(), Value::Null);
            // Per-zone size: the cluster's node count over the pool's zones.
            if let Some(total) = num(&cluster["currentNodeCount"]) {
                let zones = p["locations"].as_array().map(|l| l.len() as i64).filter(|z| *z > 0).unwrap_or(1);
                a.insert("node_count".into(), Value::from_i64(total / zones));
            }
        }
    } else {
        a.insert("machine_type".into(), Value::Null);
        a.insert("node_count".into(), Value::from_i64(0));
    }
    a
}

fn autoscaling(planned: &Attrs) -> Json {
    match (n(planned, "min_nodes"), n(planned, "max_nodes")) {
        (Some(lo), Some(hi)) => json!({"enabled": true, "minNodeCount": lo, "maxNodeCount": hi}),
        _ => json!({"enabled": false}),
    }
}

/// The clusters.create body: the cluster with its one node pool.
pub fn create_body(id: &ClusterId, planned: &Attrs) -> Json {
    let mut pool = json!({
        "name": NODE_POOL,
        "initialNodeCount": n(planned, "node_count").unwrap_or(2),
        "config": {"machineType": s(planned, "machine_type").unwrap_or_else(|| "e2-standard-2".into()), "oauthScopes": ["https://www.googleapis.com/auth/cloud-platform"]},
        "autoscaling": autoscaling(planned),
        "management": {"autoUpgrade": true, "autoRepair": true},
    });
    let mut cluster = json!({"name": id.name, "nodePools": [], "resourceLabels": {"managed-by": "kdeploy"}});
    if let Some(v) = s(planned, "version") {
        cluster["initialClusterVersion"] = json!(v);
        pool["version"] = json!(v);
    }
    cluster["nodePools"] = json!([pool]);
    json!({"cluster": cluster})
}

/// Waits for a long-running operation to be DONE (operations.get), failing with its error.
/// TEST ONLY: `KDEPLOY_TEST_GKE_ENDPOINT` replaces the API server endpoint reported for every GKE
/// cluster (and clears the CA), so that the in-cluster phase can run against a local test API
/// server while the GKE calls go to a mock. Never set it against real GCP.
pub const TEST_GKE_ENDPOINT_ENV: &str = "KDEPLOY_TEST_GKE_ENDPOINT";

pub async fn wait_operation(sh: &Shared, address: &str, id: &ClusterId, op: Json, action: &str) -> Result<(), ProviderError> {
    let start = Instant::now();
    let mut op = op;
    loop {
        let name = op["name"].as_str().unwrap_or_default().to_string();
        if op["status"].as_str() == Some("DONE") {
            let err = &op["error"];
            let message = err["message"].as_str().filter(|m| !m.is_empty()).or_else(|| op["statusMessage"].as_str().filter(|m| !m.is_empty()));
            if let Some(m) = message {
                let kind = match err["code"].as_i64() {
                    Some(7 | 16) => ErrorKind::Unauthorized,
                    Some(3 | 9 | 11) => ErrorKind::Invalid,
                    Some(6 | 10) => ErrorKind::Conflict,
                    Some(4) => ErrorKind::Timeout,
                    _ => ErrorKind::Other,
                };
                return Err(ProviderError::new(kind, format!("{}: operation {name} failed: {m}", what(address, action, id))));
            }
            return Ok(());
        }
        if name.is_empty() {
            return Err(ProviderError::other(format!("{}: the API answered without an operation name", what(address, action, id))));
        }
        if start.elapsed() > sh.config.operation_timeout {
            return Err(ProviderError::new(
                ErrorKind::Timeout,
                format!(
                    "{}: operation {name} not done after {} s (status {}); it goes on in GCP: run apply again later",
                    what(address, action, id),
                    sh.config.operation_timeout.as_secs(),
                    op["status"].as_str().unwrap_or("?")
                ),
            ));
        }
        tokio::time::sleep(sh.config.poll_interval).await;
        let url = format!("{}/operations/{}", id.parent(&sh.config.container_url), enc(&name));
        op = sh.api.get(&url).await.map_err(|e| e.into_provider(&format!("{}: polling operation {name}", what(address, action, id))))?;
    }
}

async fn post_op(sh: &Shared, address: &str, id: &ClusterId, method: Method, url: &str, body: &Json, action: &str) -> Result<(), ProviderError> {
    let op = sh.api.call(method, url, Some(body)).await.map_err(|e| e.into_provider(&what(address, action, id)))?;
    wait_operation(sh, address, id, op, action).await
}

/// Creates the cluster, or brings the existing one to `planned` (version, node pool size and
/// autoscaling), then returns its live attributes.
pub async fn apply(sh: &Shared, address: &str, planned: &Attrs, prior: Option<&Attrs>) -> Result<Attrs, ProviderError> {
    let id = ClusterId::from_attrs(address, planned)?;
    let base = &sh.config.container_url;
    let live = match get_cluster(sh, address, &id).await? {
        None => {
            let url = format!("{}/clusters", id.parent(base));
            match sh.api.call(Method::POST, &url, Some(&create_body(&id, planned))).await {
                Ok(op) => wait_operation(sh, address, &id, op, "creating").await?,
                Err(e) if e.is_conflict() => {
                    return Err(ProviderError::new(
                        ErrorKind::Conflict,
                        format!(
                            "{}: a cluster of that name already exists (created concurrently?); run plan again to adopt it",
                            what(address, "creating", &id)
                        ),
                    ));
                }
                Err(e) => return Err(e.into_provider(&what(address, "creating", &id))),
            }
            fetch(sh, address, &id).await?
        }
        Some(mut c) => {
            if let (Some(v), Some(cur)) = (s(planned, "version"), c["currentMasterVersion"].as_str())
                && !version_matches(&v, cur)
            {
                post_op(sh, address, &id, Method::PUT, &id.url(base), &json!({"update": {"desiredMasterVersion": v}}), "upgrading the control plane of")
                    .await?;
                let image = pool(&c).and_then(|p| p["config"]["imageType"].as_str()).unwrap_or("COS_CONTAINERD").to_string();
                post_op(sh, address, &id, Method::PUT, &id.pool_url(base), &json!({"nodeVersion": v, "imageType": image}), "upgrading the node pool of")
                    .await?;
                c = fetch(sh, address, &id).await?;
            }
            let Some(p) = pool(&c) else {
                return Err(ProviderError::new(
                    ErrorKind::Conflict,
                    format!(
                        "{}: node pool \"{NODE_POOL}\" is missing; it was removed out of band: delete the cluster (destroy) and apply again",
                        what(address, "updating", &id)
                    ),
                ));
            };
            let want_auto = autoscaling(planned);
            let live_auto = &p["autoscaling"];
            let auto_same = want_auto["enabled"] == live_auto["enabled"].as_bool().unwrap_or(false)
                && (want_auto["enabled"] == false
                    || (num(&want_auto["minNodeCount"]) == num(&live_auto["minNodeCount"])
                        && num(&want_auto["maxNodeCount"]) == num(&live_auto["maxNodeCount"])));
            if !auto_same {
                post_op(
                    sh,
                    address,
                    &id,
                    Method::POST,
                    &format!("{}:setAutoscaling", id.pool_url(base)),
                    &json!({"autoscaling": want_auto}),
                    "setting node pool autoscaling of",
                )
                .await?;
            }
            let want = n(planned, "node_count");
            // With autoscaling the autoscaler owns the count: resize only when the stack's
            // node_count changed. Without, resize whenever the live size differs.
            let resize = if want_auto["enabled"] == true {
                prior.is_some_and(|p| n(p, "node_count") != want)
            } else {
                n(&live_attrs(&id, &c, &attrs(None)), "node_count") != want
            };
            if let Some(w) = want
                && resize
            {
                post_op(sh, address, &id, Method::POST, &format!("{}:setSize", id.pool_url(base)), &json!({"nodeCount": w}), "resizing the node pool of")
                    .await?;
            }
            fetch(sh, address, &id).await?
        }
    };
    Ok(live_attrs(&id, &live, planned))
}

async fn fetch(sh: &Shared, address: &str, id: &ClusterId) -> Result<Json, ProviderError> {
    get_cluster(sh, address, id)
        .await?
        .ok_or_else(|| ProviderError::other(format!("{}: the cluster disappeared right after the operation", what(address, "reading", id))))
}

/// Deletes the cluster (and with it the node pool) and waits; gone already is fine.
pub async fn delete(sh: &Shared, address: &str, prior: &Attrs) -> Result<(), ProviderError> {
    let id = ClusterId::from_attrs(address, prior)?;
    match sh.api.call(Method::DELETE, &id.url(&sh.config.container_url), None).await {
        Ok(op) => wait_operation(sh, address, &id, op, "deleting").await,
        Err(e) if e.is_not_found() => Ok(()),
        Err(CallError::Api(e)) => Err(e.to_provider(&what(address, "deleting", &id))),
        Err(e) => Err(e.into_provider(&what(address, "deleting", &id))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_match_by_prefix() {
        assert!(version_matches("1.31", "1.31.5-gke.1234000"));
        assert!(version_matches("1.31.5-gke.1234000", "1.31.5-gke.1234000"));
        assert!(!version_matches("1.3", "1.31.5-gke.1234000"));
        assert!(!version_matches("1.32", "1.31.5-gke.1234000"));
    }
}

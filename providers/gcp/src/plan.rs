//! Plan rules: which computed attributes are known before apply, and which changes GKE and
//! GCS make in place (everything else replaces the component).

use kdeploy_provider::{AttrPath, ErrorKind, PlanResponse, ProviderError, Value};

use crate::util::{Attrs, attrs, n, name_from_address, s};
use kdeploy_provider::attrs::{keep, replaced, unknown};

/// GKE inputs that cannot change in place: the cluster's identity and the node pool's machine
/// type (fixed for a node pool's lifetime).
pub const GKE_REPLACE: &[&str] = &["project", "location", "name", "cluster_name", "machine_type"];
/// Changes applied in place: `node_count` (nodePools.setSize), `min_nodes`/`max_nodes`
/// (nodePools.setAutoscaling) and `version` (clusters.update, then nodePools.update).
pub const GKE_IN_PLACE: &[&str] = &["node_count", "min_nodes", "max_nodes", "version"];
/// Computed GKE attributes that belong to one cluster instance.
pub const GKE_LIVE: &[&str] = &["endpoint", "certificate_authority"];

pub const GCS_REPLACE: &[&str] = &["bucket", "project", "location"];

/// The single node pool kdeploy manages in each cluster.
pub const NODE_POOL: &str = "default";
/// The `token_source` name the Kubernetes provider looks up for GKE clusters.
pub const TOKEN_SOURCE: &str = "gke";
/// The S3-compatible (XML API) endpoint Vault uses with the HMAC key.
pub const GCS_ENDPOINT: &str = "storage.googleapis.com";

/// The GKE cluster name: `name`, or derived from the block label.
pub fn gke_name(address: &str, desired: &Attrs) -> Value {
    match desired.get("name") {
        Some(Value::String(n)) if !n.is_empty() => Value::String(n.clone()),
        Some(v @ Value::Unknown(_)) => v.clone(),
        _ => Value::String(name_from_address(address)),
    }
}

/// The service account kdeploy creates for a bucket's HMAC key (account ids: 6-30 characters).
pub fn service_account_id(bucket: &str) -> String {
    let mut id: String = format!("kd-{bucket}").chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    id.truncate(30);
    let id = id.trim_end_matches('-').to_string();
    if id.len() < 6 { format!("{id}-hmac") } else { id }
}

fn invalid(address: &str, msg: String) -> ProviderError {
    ProviderError::new(ErrorKind::Invalid, format!("{address}: {msg}"))
}

/// Plans a GKE cluster with its `default` node pool.
pub fn plan_gke(address: &str, desired: &Value, prior: Option<&Value>) -> Result<PlanResponse, ProviderError> {
    let mut planned = attrs(Some(desired));
    let prior_map = prior.map(|p| attrs(Some(p)));
    let prior = prior_map.as_ref();
    let (count, min, max) = (n(&planned, "node_count"), n(&planned, "min_nodes"), n(&planned, "max_nodes"));
    if let Some(c) = count
        && c < 0
    {
        return Err(invalid(address, format!("node_count must be at least 0, got {c}")));
    }
    match (min, max) {
        (Some(lo), Some(hi)) if lo < 0 || hi < 1 || lo > hi => {
            return Err(invalid(address, format!("autoscaling needs 0 <= min_nodes <= max_nodes and max_nodes >= 1; got min_nodes = {lo}, max_nodes = {hi}")));
        }
        (Some(_), None) | (None, Some(_))
            if !planned.get("min_nodes").is_some_and(Value::is_unknown) && !planned.get("max_nodes").is_some_and(Value::is_unknown) =>
        {
            return Err(invalid(address, "set both min_nodes and max_nodes to enable autoscaling, or neither".into()));
        }
        _ => {}
    }
    if let (Some(c), Some(lo), Some(hi)) = (count, min, max)
        && (c < lo || c > hi)
    {
        return Err(invalid(address, format!("node_count = {c} is outside min_nodes = {lo} .. max_nodes = {hi}")));
    }
    if let Some(v) = s(&planned, "version") {
        let ok = v == "latest" || (v.split(['.', '-']).count() >= 2 && v.chars().next().is_some_and(|c| c.is_ascii_digit()));
        if !ok {
            return Err(invalid(address, format!("version must be a GKE version such as \"1.31\" or \"1.31.5-gke.1234000\" (or \"latest\"), got {v:?}")));
        }
    }
    planned.insert("cluster_name".into(), gke_name(address, &planned));
    planned.insert("token_source".into(), Value::string(TOKEN_SOURCE));
    for attr in GKE_LIVE {
        planned.insert((*attr).into(), keep(prior, address, attr));
    }
    let mut requires_replace = replaced(prior, &planned, GKE_REPLACE);
    if requires_replace.contains(&AttrPath::attr("name")) {
        requires_replace.retain(|p| *p != AttrPath::attr("cluster_name"));
    }
    if !requires_replace.is_empty() {
        for attr in GKE_LIVE {
            planned.insert((*attr).into(), unknown(address, attr));
        }
    }
    Ok(PlanResponse { planned: Value::Map(planned), requires_replace, warnings: Vec::new() })
}

/// GCS bucket naming rules (the common subset: no dots, which need domain verification).
pub fn check_bucket_name(name: &str) -> Result<(), String> {
    let ok_chars = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    let ends = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) && name.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if (3..=63).contains(&name.len()) && ok_chars && ends && !name.starts_with("goog") {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid GCS bucket name: 3 to 63 lowercase letters, digits, hyphens and underscores, starting and ending with a letter or digit, not starting with \"goog\""
        ))
    }
}

/// Plans a GCS recordings bucket with its service account and HMAC key.
pub fn plan_gcs(address: &str, desired: &Value, prior: Option<&Value>) -> Result<PlanResponse, ProviderError> {
    let mut planned = attrs(Some(desired));
    let prior_map = prior.map(|p| attrs(Some(p)));
    let prior = prior_map.as_ref();
    if let Some(b) = s(&planned, "bucket") {
        check_bucket_name(&b).map_err(|e| invalid(address, e))?;
    }
    if let Some(d) = n(&planned, "retention_days")
        && d < 1
    {
        return Err(invalid(address, format!("retention_days must be at least 1 (or null to keep recordings forever), got {d}")));
    }
    // Locations are case-insensitive (GCS reports them upper-case): keep the value as written
    // (apply checks that inputs did not change since the plan), and a change of case alone is
    // no change.
    if let (Some(l), Some(before)) = (s(&planned, "location"), prior.and_then(|p| s(p, "location")))
        && l.eq_ignore_ascii_case(&before)
    {
        planned.insert("location".into(), Value::String(before));
    }
    planned.insert("endpoint".into(), Value::string(GCS_ENDPOINT));
    let requires_replace = replaced(prior, &planned, GCS_REPLACE);
    for attr in ["access_key", "secret_key"] {
        let v = if requires_replace.is_empty() { keep(prior, address, attr) } else { unknown(address, attr) };
        planned.insert(attr.into(), v);
    }
    Ok(PlanResponse { planned: Value::Map(planned), requires_replace, warnings: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn map(pairs: &[(&str, Value)]) -> Value {
        Value::Map(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    fn gke(count: i64, location: &str) -> Value {
        map(&[
            ("project", Value::string("p1")),
            ("location", Value::string(location)),
            ("name", Value::Null),
            ("version", Value::string("1.31")),
            ("machine_type", Value::string("e2-standard-2")),
            ("node_count", Value::from_i64(count)),
            ("min_nodes", Value::from_i64(1)),
            ("max_nodes", Value::from_i64(4)),
        ])
    }

    fn applied(planned: &Value) -> Value {
        let mut m = attrs(Some(planned));
        m.insert("endpoint".into(), Value::string("https://10.0.0.1"));
        m.insert("certificate_authority".into(), Value::string("Q0E="));
        Value::Map(m)
    }

    #[test]
    fn gke_rules() {
        let create = plan_gke("cluster.cloud", &gke(2, "europe-west1"), None).unwrap();
        let p = create.planned.as_map().unwrap();
        assert_eq!(p["cluster_name"], Value::string("cloud"));
        assert_eq!(p["token_source"], Value::string("gke"));
        assert!(p["endpoint"].is_unknown() && p["certificate_authority"].is_unknown());
        let live = applied(&create.planned);
        let again = plan_gke("cluster.cloud", &gke(2, "europe-west1"), Some(&live)).unwrap();
        assert_eq!(again.planned, live);
        assert!(again.requires_replace.is_empty());
        let scaled = plan_gke("cluster.cloud", &gke(3, "europe-west1"), Some(&live)).unwrap();
        assert!(scaled.requires_replace.is_empty());
        assert_eq!(scaled.planned.as_map().unwrap()["endpoint"], Value::string("https://10.0.0.1"));
        let moved = plan_gke("cluster.cloud", &gke(2, "us-central1"), Some(&live)).unwrap();
        assert_eq!(moved.requires_replace, vec![AttrPath::attr("location")]);
        assert!(moved.planned.as_map().unwrap()["endpoint"].is_unknown());
        let mut d = attrs(Some(&gke(2, "europe-west1")));
        d.insert("machine_type".into(), Value::string("e2-standard-4"));
        let r = plan_gke("cluster.cloud", &Value::Map(d), Some(&live)).unwrap();
        assert_eq!(r.requires_replace, vec![AttrPath::attr("machine_type")]);
        assert!(plan_gke("cluster.cloud", &gke(9, "europe-west1"), None).is_err());
        let mut d = attrs(Some(&gke(2, "europe-west1")));
        d.insert("max_nodes".into(), Value::Null);
        assert!(plan_gke("cluster.cloud", &Value::Map(d), None).is_err());
    }

    #[test]
    fn gcs_rules() {
        let d = map(&[
            ("bucket", Value::string("rec-1")),
            ("project", Value::string("p1")),
            ("location", Value::string("eu")),
            ("retention_days", Value::from_i64(30)),
        ]);
        let r = plan_gcs("object_storage.rec", &d, None).unwrap();
        let p = r.planned.as_map().unwrap();
        assert_eq!(p["location"], Value::string("eu"), "kept as written");
        assert!(p["access_key"].is_unknown() && p["secret_key"].is_unknown());
        let mut upper = attrs(Some(&d));
        upper.insert("location".into(), Value::string("EU"));
        let same = plan_gcs("object_storage.rec", &Value::Map(upper), Some(&r.planned)).unwrap();
        assert!(same.requires_replace.is_empty(), "a change of case is no change");
        assert_eq!(same.planned.as_map().unwrap()["location"], Value::string("eu"));
        let mut live = p.clone();
        live.insert("access_key".into(), Value::string("GOOG1"));
        live.insert("secret_key".into(), Value::string("s"));
        let live = Value::Map(live);
        assert_eq!(plan_gcs("object_storage.rec", &d, Some(&live)).unwrap().planned, live);
        assert!(check_bucket_name("Bad").is_err() && check_bucket_name("google-x").is_err());
        assert_eq!(service_account_id("rec-1"), "kd-rec-1");
        assert_eq!(service_account_id("a"), "kd-a-hmac");
        assert!(service_account_id(&"x".repeat(60)).len() <= 30);
    }
}

//! Plan rules: which computed attributes are known before apply, and which changes EKS and S3
//! can make in place (everything else replaces the component).

use kdeploy_provider::{AttrPath, ErrorKind, PlanResponse, ProviderError, Value};

use crate::clients::s3_endpoint_host;
use crate::policy::bucket_arn;
use crate::util::{Attrs, attrs, list, n, name_from_address, s};
use kdeploy_provider::attrs::{keep, replaced, unknown};

/// EKS cluster inputs that EKS cannot change in place. `instance_types` and `ami_type` are
/// fixed for a managed node group's lifetime; the VPC and roles for the cluster's.
pub const EKS_REPLACE: &[&str] =
    &["region", "name", "cluster_name", "cluster_region", "role_arn", "node_role_arn", "subnet_ids", "vpc_cidr", "ami_type", "instance_types"];
/// Changes EKS applies in place: `version` (UpdateClusterVersion, then the node group),
/// `endpoint_public_access` (UpdateClusterConfig), `min_size`/`max_size`/`desired_size`
/// (UpdateNodegroupConfig) and `tags` (TagResource/UntagResource).
pub const EKS_IN_PLACE: &[&str] = &["version", "endpoint_public_access", "min_size", "max_size", "desired_size", "tags"];

pub const S3_REPLACE: &[&str] = &["bucket", "region", "bucket_region"];

/// The EKS cluster name: `name`, or derived from the block label.
pub fn eks_name(address: &str, desired: &Attrs) -> Value {
    match desired.get("name") {
        Some(Value::String(n)) if !n.is_empty() => Value::String(n.clone()),
        Some(v @ Value::Unknown(_)) => v.clone(),
        _ => Value::String(name_from_address(address)),
    }
}

/// Node group name (one managed node group per cluster).
pub const NODE_GROUP: &str = "default";

/// IAM role names kdeploy creates for a cluster (64 characters at most).
pub fn role_name(cluster: &str, what: &str) -> String {
    let suffix = format!("-{what}");
    let mut base = format!("kdeploy-{cluster}");
    base.truncate(64 - suffix.len());
    format!("{base}{suffix}")
}

/// The IAM user kdeploy creates for a bucket.
pub fn user_name(bucket: &str) -> String {
    let mut n = format!("kdeploy-{bucket}");
    n.truncate(64);
    n
}

fn invalid(address: &str, msg: String) -> ProviderError {
    ProviderError::new(ErrorKind::Invalid, format!("{address}: {msg}"))
}

/// Plans an EKS cluster. `region` is the region in effect (or unknown).
pub fn plan_eks(address: &str, desired: &Value, prior: Option<&Value>, region: Value) -> Result<PlanResponse, ProviderError> {
    let mut planned = attrs(Some(desired));
    let prior_map = prior.map(|p| attrs(Some(p)));
    let prior = prior_map.as_ref();
    if let (Some(min), Some(max), Some(want)) = (n(&planned, "min_size"), n(&planned, "max_size"), n(&planned, "desired_size"))
        && (min < 0 || max < 1 || min > want || want > max)
    {
        return Err(invalid(
            address,
            format!(
                "node group sizes must satisfy 0 <= min_size <= desired_size <= max_size and max_size >= 1; got min_size = {min}, desired_size = {want}, max_size = {max}"
            ),
        ));
    }
    if let Some(types) = list(&planned, "instance_types")
        && types.is_empty()
    {
        return Err(invalid(address, "instance_types must not be empty; leave it out for the EKS default (t3.medium)".into()));
    }
    if let Some(v) = s(&planned, "version") {
        let ok = v.split('.').count() == 2 && v.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        if !ok {
            return Err(invalid(address, format!("version must look like \"1.31\" (major.minor), got {v:?}")));
        }
    }
    let name = eks_name(address, &planned);
    planned.insert("cluster_name".into(), name);
    planned.insert("cluster_region".into(), region);
    planned.insert("token_source".into(), Value::string("eks"));
    for attr in ["endpoint", "certificate_authority", "arn", "node_group_arn"] {
        planned.insert(attr.into(), keep(prior, address, attr));
    }
    let own_vpc = !matches!(list(&planned, "subnet_ids"), Some(l) if !l.is_empty()) && !planned.get("subnet_ids").is_some_and(Value::is_unknown);
    planned.insert("vpc_id".into(), if own_vpc { keep(prior, address, "vpc_id") } else { Value::Null });
    let mut requires_replace = replaced(prior, &planned, EKS_REPLACE);
    // The cluster name input and its effective value are the same change: report it once.
    if requires_replace.contains(&AttrPath::attr("name")) {
        requires_replace.retain(|p| *p != AttrPath::attr("cluster_name"));
    }
    if requires_replace.contains(&AttrPath::attr("region")) {
        requires_replace.retain(|p| *p != AttrPath::attr("cluster_region"));
    }
    if !requires_replace.is_empty() {
        // A new cluster: nothing of the old one carries over.
        for attr in ["endpoint", "certificate_authority", "arn", "node_group_arn", "vpc_id"] {
            if planned.get(attr).is_some_and(|v| !v.is_null()) {
                planned.insert(attr.into(), unknown(address, attr));
            }
        }
    }
    Ok(PlanResponse { planned: Value::Map(planned), requires_replace, warnings: Vec::new() })
}

/// S3 bucket naming rules (the common subset of them).
pub fn check_bucket_name(name: &str) -> Result<(), String> {
    let ok_chars = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let ends = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) && name.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if (3..=63).contains(&name.len()) && ok_chars && ends && !name.contains("..") {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid S3 bucket name: 3 to 63 characters, lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit"
        ))
    }
}

/// Plans an S3 recordings bucket. `region` is the region in effect (or unknown).
pub fn plan_s3(address: &str, desired: &Value, prior: Option<&Value>, region: Value) -> Result<PlanResponse, ProviderError> {
    let mut planned = attrs(Some(desired));
    let prior_map = prior.map(|p| attrs(Some(p)));
    let prior = prior_map.as_ref();
    let bucket = s(&planned, "bucket");
    if let Some(b) = &bucket {
        check_bucket_name(b).map_err(|e| invalid(address, e))?;
    }
    if let Some(d) = n(&planned, "retention_days")
        && d < 1
    {
        return Err(invalid(address, format!("retention_days must be at least 1 (or null to keep recordings forever), got {d}")));
    }
    let region_str = region.as_str().map(str::to_string);
    planned.insert("bucket_region".into(), region);
    match (&bucket, &region_str) {
        (Some(b), Some(r)) => {
            planned.insert("endpoint".into(), Value::String(s3_endpoint_host(r)));
            planned.insert("arn".into(), Value::String(bucket_arn(r, b)));
        }
        _ => {
            planned.insert("endpoint".into(), unknown(address, "endpoint"));
            planned.insert("arn".into(), unknown(address, "arn"));
        }
    }
    planned.insert("iam_user".into(), bucket.as_deref().map(|b| Value::String(user_name(b))).unwrap_or_else(|| unknown(address, "iam_user")));
    let requires_replace = replaced(prior, &planned, S3_REPLACE);
    // The access key pair survives updates; a new bucket (replacement) gets a new user and key.
    for attr in ["access_key", "secret_key"] {
        let v = if requires_replace.is_empty() { keep(prior, address, attr) } else { unknown(address, attr) };
        planned.insert(attr.into(), v);
    }
    Ok(PlanResponse { planned: Value::Map(planned), requires_replace, warnings: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, Value)]) -> Value {
        Value::Map(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    fn eks_desired(desired_size: i64, name: Option<&str>) -> Value {
        map(&[
            ("name", name.map(Value::string).unwrap_or(Value::Null)),
            ("region", Value::Null),
            ("version", Value::string("1.31")),
            ("role_arn", Value::Null),
            ("node_role_arn", Value::Null),
            ("subnet_ids", Value::Null),
            ("vpc_cidr", Value::string("10.20.0.0/16")),
            ("endpoint_public_access", Value::Bool(true)),
            ("instance_types", Value::List(vec![Value::string("t3.large")])),
            ("min_size", Value::from_i64(1)),
            ("max_size", Value::from_i64(3)),
            ("desired_size", Value::from_i64(desired_size)),
            ("ami_type", Value::Null),
            ("tags", Value::Null),
        ])
    }

    fn applied(planned: &Value) -> Value {
        let mut m = attrs(Some(planned));
        for (k, v) in [
            ("endpoint", "https://x.eks.amazonaws.com"),
            ("certificate_authority", "Q0E="),
            ("arn", "arn:aws:eks:eu-west-1:1:cluster/cloud"),
            ("node_group_arn", "arn:ng"),
            ("vpc_id", "vpc-1"),
        ] {
            m.insert(k.into(), Value::string(v));
        }
        Value::Map(m)
    }

    #[test]
    fn eks_create_knows_name_region_and_token_source() {
        let r = plan_eks("cluster.cloud", &eks_desired(2, None), None, Value::string("eu-west-1")).unwrap();
        let p = r.planned.as_map().unwrap();
        assert_eq!(p["cluster_name"], Value::string("cloud"));
        assert_eq!(p["cluster_region"], Value::string("eu-west-1"));
        assert_eq!(p["token_source"], Value::string("eks"));
        assert!(p["endpoint"].is_unknown() && p["certificate_authority"].is_unknown() && p["vpc_id"].is_unknown());
        assert_eq!(p["name"], Value::Null, "inputs stay as written");
        assert!(r.requires_replace.is_empty());
    }

    #[test]
    fn eks_unchanged_is_a_no_op_and_scaling_is_in_place() {
        let first = plan_eks("cluster.cloud", &eks_desired(2, None), None, Value::string("eu-west-1")).unwrap();
        let live = applied(&first.planned);
        let again = plan_eks("cluster.cloud", &eks_desired(2, None), Some(&live), Value::string("eu-west-1")).unwrap();
        assert_eq!(again.planned, live);
        assert!(again.requires_replace.is_empty());
        let scaled = plan_eks("cluster.cloud", &eks_desired(3, None), Some(&live), Value::string("eu-west-1")).unwrap();
        assert!(scaled.requires_replace.is_empty());
        assert_eq!(scaled.planned.as_map().unwrap()["desired_size"], Value::from_i64(3));
        assert_eq!(scaled.planned.as_map().unwrap()["endpoint"], Value::string("https://x.eks.amazonaws.com"));
        // Version, endpoint access and tags are updated in place too.
        let mut d = attrs(Some(&eks_desired(2, None)));
        d.insert("version".into(), Value::string("1.32"));
        d.insert("endpoint_public_access".into(), Value::Bool(false));
        d.insert("tags".into(), Value::Map([("team".to_string(), Value::string("video"))].into()));
        let upgraded = plan_eks("cluster.cloud", &Value::Map(d), Some(&live), Value::string("eu-west-1")).unwrap();
        assert!(upgraded.requires_replace.is_empty(), "{:?}", upgraded.requires_replace);
    }

    #[test]
    fn eks_name_and_instance_type_changes_replace() {
        let first = plan_eks("cluster.cloud", &eks_desired(2, None), None, Value::string("eu-west-1")).unwrap();
        let live = applied(&first.planned);
        let renamed = plan_eks("cluster.cloud", &eks_desired(2, Some("other")), Some(&live), Value::string("eu-west-1")).unwrap();
        assert_eq!(renamed.requires_replace, vec![AttrPath::attr("name")]);
        assert!(renamed.planned.as_map().unwrap()["endpoint"].is_unknown());
        let mut d = attrs(Some(&eks_desired(2, None)));
        d.insert("instance_types".into(), Value::List(vec![Value::string("m7g.large")]));
        d.insert("ami_type".into(), Value::string("AL2023_ARM_64_STANDARD"));
        let arm = plan_eks("cluster.cloud", &Value::Map(d), Some(&live), Value::string("eu-west-1")).unwrap();
        assert_eq!(arm.requires_replace, vec![AttrPath::attr("ami_type"), AttrPath::attr("instance_types")]);
        let moved = plan_eks("cluster.cloud", &eks_desired(2, None), Some(&live), Value::string("us-east-1")).unwrap();
        assert_eq!(moved.requires_replace, vec![AttrPath::attr("cluster_region")]);
    }

    #[test]
    fn eks_rejects_impossible_sizes_and_versions() {
        let e = plan_eks("cluster.cloud", &eks_desired(5, None), None, Value::string("eu-west-1")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert!(e.message.contains("desired_size = 5"), "{}", e.message);
        let mut d = attrs(Some(&eks_desired(2, None)));
        d.insert("version".into(), Value::string("latest"));
        assert!(plan_eks("cluster.cloud", &Value::Map(d), None, Value::string("eu-west-1")).is_err());
    }

    #[test]
    fn eks_given_subnets_mean_no_vpc() {
        let mut d = attrs(Some(&eks_desired(2, None)));
        d.insert("subnet_ids".into(), Value::List(vec![Value::string("subnet-1"), Value::string("subnet-2")]));
        let r = plan_eks("cluster.cloud", &Value::Map(d), None, Value::string("eu-west-1")).unwrap();
        assert_eq!(r.planned.as_map().unwrap()["vpc_id"], Value::Null);
    }

    fn s3_desired(bucket: &str, retention: i64) -> Value {
        map(&[
            ("bucket", Value::string(bucket)),
            ("region", Value::Null),
            ("versioning", Value::Bool(false)),
            ("retention_days", Value::from_i64(retention)),
            ("tags", Value::Null),
        ])
    }

    #[test]
    fn s3_plan_rules() {
        let r = plan_s3("object_storage.recordings", &s3_desired("rec-1", 30), None, Value::string("eu-west-1")).unwrap();
        let p = r.planned.as_map().unwrap();
        assert_eq!(p["arn"], Value::string("arn:aws:s3:::rec-1"));
        assert_eq!(p["iam_user"], Value::string("kdeploy-rec-1"));
        assert_eq!(p["bucket_region"], Value::string("eu-west-1"));
        assert!(p["access_key"].is_unknown() && p["secret_key"].is_unknown());
        let mut live = p.clone();
        live.insert("access_key".into(), Value::string("AKIA1"));
        live.insert("secret_key".into(), Value::string("s"));
        let live = Value::Map(live);
        let again = plan_s3("object_storage.recordings", &s3_desired("rec-1", 30), Some(&live), Value::string("eu-west-1")).unwrap();
        assert_eq!(again.planned, live);
        let retention = plan_s3("object_storage.recordings", &s3_desired("rec-1", 7), Some(&live), Value::string("eu-west-1")).unwrap();
        assert!(retention.requires_replace.is_empty());
        assert_eq!(retention.planned.as_map().unwrap()["access_key"], Value::string("AKIA1"));
        let renamed = plan_s3("object_storage.recordings", &s3_desired("rec-2", 30), Some(&live), Value::string("eu-west-1")).unwrap();
        assert_eq!(renamed.requires_replace, vec![AttrPath::attr("bucket")]);
        assert!(renamed.planned.as_map().unwrap()["access_key"].is_unknown());
        assert!(plan_s3("object_storage.recordings", &s3_desired("Bad_Name", 30), None, Value::string("eu-west-1")).is_err());
        assert!(plan_s3("object_storage.recordings", &s3_desired("ok-name", 0), None, Value::string("eu-west-1")).is_err());
    }

    #[test]
    fn generated_names_fit_iam_limits() {
        assert_eq!(role_name("cloud", "cluster"), "kdeploy-cloud-cluster");
        assert!(role_name(&"x".repeat(100), "node").len() <= 64);
        assert!(role_name(&"x".repeat(100), "node").ends_with("-node"));
        assert_eq!(user_name(&"b".repeat(63)).len(), 64);
    }
}

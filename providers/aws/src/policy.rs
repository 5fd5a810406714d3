//! IAM policy documents kdeploy writes.

use serde_json::{Value as Json, json};

use crate::util::partition;

/// Trust policy letting an AWS service assume a role.
pub fn trust(service: &str) -> Json {
    json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]
    })
}

/// Managed policies of the EKS cluster role.
pub fn cluster_policies(region: &str) -> Vec<String> {
    ["AmazonEKSClusterPolicy"].iter().map(|p| managed(region, p)).collect()
}

/// Managed policies of the node group role.
pub fn node_policies(region: &str) -> Vec<String> {
    ["AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly"].iter().map(|p| managed(region, p)).collect()
}

fn managed(region: &str, name: &str) -> String {
    format!("arn:{}:iam::aws:policy/{name}", partition(region))
}

pub fn bucket_arn(region: &str, bucket: &str) -> String {
    format!("arn:{}:s3:::{bucket}", partition(region))
}

/// The inline policy of the Vault user: list and locate this bucket, read/write/delete its
/// objects; nothing else.
pub fn bucket_access(region: &str, bucket: &str) -> Json {
    let arn = bucket_arn(region, bucket);
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ListRecordingsBucket", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": arn},
            {"Sid": "ReadWriteRecordings", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], "Resource": format!("{arn}/*")}
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_policy_names_only_that_bucket() {
        let p = bucket_access("eu-west-1", "recordings-x");
        assert_eq!(p["Version"], "2012-10-17");
        let resources: Vec<String> = p["Statement"].as_array().unwrap().iter().map(|s| s["Resource"].as_str().unwrap().to_string()).collect();
        assert_eq!(resources, vec!["arn:aws:s3:::recordings-x", "arn:aws:s3:::recordings-x/*"]);
        let actions: Vec<&str> = p["Statement"].as_array().unwrap().iter().flat_map(|s| s["Action"].as_array().unwrap()).filter_map(|a| a.as_str()).collect();
        assert!(actions.iter().all(|a| a.starts_with("s3:")), "{actions:?}");
        assert!(!actions.iter().any(|a| a.contains('*')), "no wildcard actions: {actions:?}");
        assert!(!p.to_string().contains("\"*\""), "no wildcard resource");
    }

    #[test]
    fn trust_and_managed_policies() {
        assert_eq!(trust("eks.amazonaws.com")["Statement"][0]["Principal"]["Service"], "eks.amazonaws.com");
        assert_eq!(cluster_policies("eu-west-1"), vec!["arn:aws:iam::aws:policy/AmazonEKSClusterPolicy"]);
        assert_eq!(node_policies("cn-north-1")[0], "arn:aws-cn:iam::aws:policy/AmazonEKSWorkerNodePolicy");
        assert_eq!(bucket_arn("us-gov-west-1", "b"), "arn:aws-us-gov:s3:::b");
    }
}

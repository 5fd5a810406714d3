//! The kdeploy AWS provider: `cluster { type = "eks" }` and `object_storage { type = "s3" }`.
//!
//! * **EKS**: the cluster and node group IAM roles (created, or given as `role_arn` /
//!   `node_role_arn`), a VPC with two public subnets when `subnet_ids` is empty, the control
//!   plane and one managed node group (`default`). Apply waits until both are ACTIVE. Version,
//!   endpoint access, scaling and tags are updated in place; every other change replaces the
//!   cluster (see [`plan::EKS_REPLACE`]).
//! * **Kubernetes access**: the cluster's attributes carry `endpoint`, `certificate_authority`,
//!   `token_source = "eks"`, `cluster_name` and `cluster_region`; the Kubernetes provider asks
//!   the [`EksTokenSource`] (registered under "eks") for a bearer token, signed like
//!   `aws eks get-token` with the caller's credentials. No kubeconfig or aws CLI is involved.
//! * **S3**: the recordings bucket (versioning, AES-256 default encryption, public access
//!   blocked, lifecycle expiration after `retention_days`), an IAM user with an inline policy
//!   limited to that bucket, and its access key (sensitive `access_key` / `secret_key`), which
//!   the Vault on the cluster uses through `storage = object_storage.<name>`.
//! * **Credentials**: the standard AWS chain (environment, shared profile incl. SSO and
//!   credential_process, web identity, container/instance metadata); region from the block or
//!   the environment. They are verified with STS GetCallerIdentity before anything is planned.
//!
//! ## Test-only settings
//!
//! * `AWS_ENDPOINT_URL` (standard SDK setting) points every client at a local endpoint such as
//!   moto's server; S3 then uses path-style addressing.
//! * `KDEPLOY_TEST_EKS_ENDPOINT` (**test only**) replaces the API server endpoint reported for
//!   every EKS cluster and clears its CA, so that the in-cluster phase can run against a local
//!   Kubernetes test API server while the AWS calls go to moto (whose EKS endpoint is not a real
//!   API server). Never set it against real AWS.

pub mod clients;
pub mod eks;
pub mod network;
pub mod plan;
pub mod policy;
pub mod s3;
pub mod token;
pub mod util;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use kdeploy_provider::{
    ApplyRequest, ApplyResponse, ComponentRef, DeleteRequest, ErrorKind, Kind, PlanRequest, PlanResponse, Preflight, Provider, ProviderError, ReadRequest,
    ReadResult, TokenSource, Value,
};

pub use clients::TEST_EKS_ENDPOINT_ENV;

/// The SDK crates this provider uses, for callers that inspect what it made (tests, tools).
pub mod sdk {
    pub use ::aws_config as config;
    pub use ::aws_credential_types as credential_types;
    pub use ::aws_sdk_ec2 as ec2;
    pub use ::aws_sdk_eks as eks;
    pub use ::aws_sdk_iam as iam;
    pub use ::aws_sdk_s3 as s3;
}
pub use token::EksTokenSource;

use crate::clients::Shared;
use crate::util::{Attrs, attrs, name_from_address, s};

/// The AWS provider.
#[derive(Default)]
pub struct AwsProvider {
    shared: Arc<Shared>,
}

impl AwsProvider {
    pub fn new() -> AwsProvider {
        AwsProvider::default()
    }

    /// The "eks" token source for the Kubernetes provider, sharing this provider's credentials.
    pub fn token_source(&self) -> Arc<dyn TokenSource> {
        Arc::new(EksTokenSource { shared: self.shared.clone() })
    }

    /// The region in effect for desired inputs: the block's, the environment's, or unknown
    /// when the block's is not known yet.
    async fn plan_region(&self, c: &ComponentRef, desired: &Attrs) -> Result<Value, ProviderError> {
        match desired.get("region") {
            Some(v @ Value::Unknown(_)) => Ok(v.clone()),
            _ => self.shared.region(s(desired, "region"), &c.address.to_string()).await.map(Value::String),
        }
    }
}

fn unsupported(c: &ComponentRef) -> ProviderError {
    ProviderError::new(
        ErrorKind::Invalid,
        format!("{}: the aws provider serves cluster type \"eks\" and object_storage type \"s3\", not {} type {:?}", c.address, c.kind, c.type_name),
    )
}

fn is_eks(c: &ComponentRef) -> bool {
    c.kind == Kind::Cluster && c.type_name == "eks"
}

fn is_s3(c: &ComponentRef) -> bool {
    c.kind == Kind::ObjectStorage && c.type_name == "s3"
}

#[async_trait]
impl Provider for AwsProvider {
    fn name(&self) -> &str {
        "aws"
    }

    async fn preflight(&self, clusters: &[(ComponentRef, Value)]) -> Preflight {
        let mut out = Preflight::default();
        for (c, desired) in clusters {
            if !is_eks(c) {
                continue;
            }
            let desired = attrs(Some(desired));
            let region = match self.plan_region(c, &desired).await {
                Ok(Value::String(r)) => r,
                Ok(_) => continue,
                Err(e) => {
                    out.errors.push(e.message);
                    continue;
                }
            };
            if let Err(e) = self.shared.check_credentials(&region).await {
                out.errors.push(e.message);
            }
        }
        out
    }

    async fn read(&self, requests: Vec<ReadRequest>) -> Result<Vec<ReadResult>, ProviderError> {
        let mut results: Vec<ReadResult> = vec![ReadResult::Missing; requests.len()];
        // EKS: per region one ListClusters, then Describe for the clusters that exist.
        let mut eks_by_region: BTreeMap<String, Vec<(usize, String, Attrs)>> = BTreeMap::new();
        // S3: one ListBuckets, then the bucket settings of the buckets that exist.
        let mut buckets: Vec<(usize, String, String, Attrs)> = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            let recorded = attrs(Some(&r.recorded));
            if is_eks(&r.component) {
                let name = s(&recorded, "cluster_name").or_else(|| s(&recorded, "name")).unwrap_or_else(|| name_from_address(&r.component.address.to_string()));
                let region = self.shared.region(s(&recorded, "cluster_region").or_else(|| s(&recorded, "region")), &r.component.address.to_string()).await?;
                eks_by_region.entry(region).or_default().push((i, name, recorded));
            } else if is_s3(&r.component) {
                // A create that never got recorded has no bucket name to look for: apply again.
                let Some(bucket) = s(&recorded, "bucket") else { continue };
                let region = self.shared.region(s(&recorded, "bucket_region").or_else(|| s(&recorded, "region")), &r.component.address.to_string()).await?;
                buckets.push((i, bucket, region, recorded));
            } else {
                return Err(unsupported(&r.component));
            }
        }
        for (region, reqs) in &eks_by_region {
            for (i, found) in eks::read_region(&self.shared, region, reqs).await? {
                results[i] = match found {
                    Some(a) => ReadResult::Found { attributes: Value::Map(a), fingerprint: None },
                    None => ReadResult::Missing,
                };
            }
        }
        if let Some((_, _, region, _)) = buckets.first() {
            let existing = s3::list_buckets(&self.shared.s3(region).await).await?;
            for (i, bucket, region, recorded) in &buckets {
                if existing.contains(bucket) {
                    let a = s3::read_bucket(&self.shared, region, bucket, recorded).await?;
                    results[*i] = ReadResult::Found { attributes: Value::Map(a), fingerprint: None };
                }
            }
        }
        Ok(results)
    }

    async fn plan(&self, req: PlanRequest<'_>) -> Result<PlanResponse, ProviderError> {
        let c = &req.component;
        if !is_eks(c) && !is_s3(c) {
            return Err(unsupported(c));
        }
        let desired = attrs(Some(req.desired));
        let region = self.plan_region(c, &desired).await?;
        if let Value::String(r) = &region {
            self.shared.check_credentials(r).await?;
        }
        if is_eks(c) {
            plan::plan_eks(&c.address.to_string(), req.desired, req.prior, region)
        } else {
            plan::plan_s3(&c.address.to_string(), req.desired, req.prior, region)
        }
    }

    async fn apply(&self, req: ApplyRequest) -> Result<ApplyResponse, ProviderError> {
        let c = &req.component;
        let planned = attrs(Some(&req.planned));
        let attributes = if is_eks(c) {
            eks::apply(&self.shared, &c.address.to_string(), &planned).await?
        } else if is_s3(c) {
            s3::apply(&self.shared, &c.address.to_string(), &planned).await?
        } else {
            return Err(unsupported(c));
        };
        Ok(ApplyResponse::ready(Value::Map(attributes), None))
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), ProviderError> {
        let c = &req.component;
        let prior = attrs(Some(&req.prior));
        if is_eks(c) {
            eks::delete(&self.shared, &c.address.to_string(), &prior).await
        } else if is_s3(c) {
            s3::delete(&self.shared, &c.address.to_string(), &prior, req.delete_data).await
        } else {
            Err(unsupported(c))
        }
    }
}

//! SDK configuration per region from the standard credential chain, and the credential check.

use std::collections::HashMap;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use kdeploy_provider::{ErrorKind, ProviderError};
use tokio::sync::Mutex;

use crate::util::{sdk_err, url_host};

/// State shared by the provider and its token source.
#[derive(Default)]
pub struct Shared {
    configs: Mutex<HashMap<String, SdkConfig>>,
    default_region: Mutex<Option<Option<String>>>,
    /// Caller identity (ARN) per region, or the error that explains why there is none.
    identity: Mutex<HashMap<String, Result<String, ProviderError>>>,
}

impl Shared {
    /// The region of the environment (AWS_REGION, AWS_DEFAULT_REGION, the profile, IMDS).
    pub async fn default_region(&self) -> Option<String> {
        let mut cached = self.default_region.lock().await;
        if let Some(r) = &*cached {
            return r.clone();
        }
        let r = aws_config::default_provider::region::DefaultRegionChain::builder().build().region().await.map(|r| r.to_string());
        *cached = Some(r.clone());
        r
    }

    /// The region a component uses: its own attribute, or the environment's.
    pub async fn region(&self, explicit: Option<String>, address: &str) -> Result<String, ProviderError> {
        if let Some(r) = explicit {
            return Ok(r);
        }
        self.default_region().await.ok_or_else(|| {
            ProviderError::new(
                ErrorKind::Invalid,
                format!("{address}: no AWS region: set region = \"...\" on the block, or AWS_REGION (or a region in the AWS profile)"),
            )
        })
    }

    /// The SDK configuration for a region: credentials from the standard chain (environment,
    /// profile incl. SSO and credential_process, web identity, container and instance metadata),
    /// endpoint overrides from AWS_ENDPOINT_URL[_<SERVICE>].
    pub async fn config(&self, region: &str) -> SdkConfig {
        let mut configs = self.configs.lock().await;
        if let Some(c) = configs.get(region) {
            return c.clone();
        }
        let c = aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region.to_string())).load().await;
        configs.insert(region.to_string(), c.clone());
        c
    }

    pub async fn eks(&self, region: &str) -> aws_sdk_eks::Client {
        aws_sdk_eks::Client::new(&self.config(region).await)
    }

    pub async fn iam(&self, region: &str) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.config(region).await)
    }

    pub async fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.config(region).await)
    }

    /// S3 with path-style addressing when the endpoint is overridden (moto, MinIO-like
    /// gateways), virtual-host style against AWS.
    pub async fn s3(&self, region: &str) -> aws_sdk_s3::Client {
        let conf = self.config(region).await;
        let path_style = s3_endpoint_override().is_some() || conf.endpoint_url().is_some();
        aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&conf).force_path_style(path_style).build())
    }

    /// Verifies that credentials resolve and are accepted (STS GetCallerIdentity), once per
    /// region and process: missing or expired credentials stop the plan before any change.
    pub async fn check_credentials(&self, region: &str) -> Result<String, ProviderError> {
        if let Some(r) = self.identity.lock().await.get(region) {
            return r.clone();
        }
        let sts = aws_sdk_sts::Client::new(&self.config(region).await);
        let r = match sts.get_caller_identity().send().await {
            Ok(out) => Ok(out.arn().unwrap_or_default().to_string()),
            Err(e) => {
                let e = sdk_err(format!("the AWS credentials could not be verified (region {region})"), e);
                let kind = if e.kind == ErrorKind::Unreachable { ErrorKind::Unreachable } else { ErrorKind::Unauthorized };
                Err(ProviderError::new(
                    kind,
                    format!(
                        "{}. kdeploy uses the standard AWS credential chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY(/AWS_SESSION_TOKEN), AWS_PROFILE (run `aws sso login --profile ...` when it is an SSO profile), AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN in CI, or instance/container metadata. Nothing was changed",
                        e.message.trim_end_matches('.')
                    ),
                ))
            }
        };
        self.identity.lock().await.insert(region.to_string(), r.clone());
        r
    }
}

/// The S3 endpoint override from the environment, if any.
pub fn s3_endpoint_override() -> Option<String> {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"].iter().find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// The S3 endpoint host Vault talks to: the override's host, or `s3.<region>.amazonaws.com`.
pub fn s3_endpoint_host(region: &str) -> String {
    match s3_endpoint_override() {
        Some(url) => url_host(&url),
        None if region.starts_with("cn-") => format!("s3.{region}.amazonaws.com.cn"),
        None => format!("s3.{region}.amazonaws.com"),
    }
}

/// TEST ONLY: `KDEPLOY_TEST_EKS_ENDPOINT` replaces the API server endpoint the provider reports
/// for every EKS cluster (and clears the CA), so that the in-cluster phase can run against a
/// local test API server while the AWS calls go to moto. Never set it against real AWS.
pub const TEST_EKS_ENDPOINT_ENV: &str = "KDEPLOY_TEST_EKS_ENDPOINT";

/// The (endpoint, certificate authority) the provider reports for a live cluster.
pub fn reported_endpoint(endpoint: Option<&str>, ca: Option<&str>) -> (String, String) {
    match kdeploy_provider::test_endpoint(TEST_EKS_ENDPOINT_ENV) {
        Some(test) => (test, String::new()),
        None => (endpoint.unwrap_or_default().to_string(), ca.unwrap_or_default().to_string()),
    }
}

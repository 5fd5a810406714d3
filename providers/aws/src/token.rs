//! Bearer tokens for EKS API servers, made the way `aws eks get-token` makes them: a presigned
//! STS GetCallerIdentity URL whose signature covers the `x-k8s-aws-id: <cluster>` header,
//! base64url-encoded (no padding) behind `k8s-aws-v1.`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
use aws_sigv4::sign::v4;
use base64::Engine;
use kdeploy_provider::{ErrorKind, ProviderError, TokenSource, Value};

use crate::clients::Shared;
use crate::util::{attrs, encode, s};

pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";

/// The STS host of a region (regional endpoint, as current `aws eks get-token` uses).
pub fn sts_host(region: &str) -> String {
    if region.starts_with("cn-") { format!("sts.{region}.amazonaws.com.cn") } else { format!("sts.{region}.amazonaws.com") }
}

/// The presigned GetCallerIdentity URL for `cluster`, valid for 60 seconds from `now`.
pub fn presigned_url(credentials: &Credentials, region: &str, cluster: &str, now: SystemTime) -> Result<String, ProviderError> {
    let host = sts_host(region);
    let base = format!("https://{host}/?Action=GetCallerIdentity&Version=2011-06-15");
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(60));
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| ProviderError::other(format!("signing the EKS token: {e}")))?
        .into();
    let headers = [("host", host.as_str()), ("x-k8s-aws-id", cluster)];
    let request = SignableRequest::new("GET", &base, headers.into_iter(), SignableBody::Bytes(&[]))
        .map_err(|e| ProviderError::other(format!("signing the EKS token: {e}")))?;
    let (instructions, _) = sign(request, &params).map_err(|e| ProviderError::other(format!("signing the EKS token: {e}")))?.into_parts();
    let mut url = base;
    for (name, value) in instructions.params() {
        url.push('&');
        url.push_str(&encode(name));
        url.push('=');
        url.push_str(&encode(value));
    }
    Ok(url)
}

/// The bearer token for `cluster`.
pub fn eks_token(credentials: &Credentials, region: &str, cluster: &str, now: SystemTime) -> Result<String, ProviderError> {
    let url = presigned_url(credentials, region, cluster, now)?;
    Ok(format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url)))
}

/// The "eks" token source the Kubernetes provider calls with the cluster's attributes
/// (`cluster_name`/`name`, `cluster_region`/`region`). Every call signs a fresh token with the
/// current credentials (the SDK's credential cache refreshes them before they expire), so a
/// reconnecting client never holds an expired token.
pub struct EksTokenSource {
    pub(crate) shared: Arc<Shared>,
}

#[async_trait]
impl TokenSource for EksTokenSource {
    async fn token(&self, cluster: &Value) -> Result<String, ProviderError> {
        let m = attrs(Some(cluster));
        let name = s(&m, "cluster_name")
            .or_else(|| s(&m, "name"))
            .ok_or_else(|| ProviderError::new(ErrorKind::Invalid, "the EKS cluster's attributes have no cluster_name; apply the cluster first"))?;
        let region = self.shared.region(s(&m, "cluster_region").or_else(|| s(&m, "region")), &format!("EKS cluster {name}")).await?;
        let conf = self.shared.config(&region).await;
        let provider = conf.credentials_provider().ok_or_else(|| {
            ProviderError::new(
                ErrorKind::Unauthorized,
                format!("no AWS credentials to sign a token for EKS cluster {name}: configure the AWS credential chain (AWS_PROFILE, AWS_ACCESS_KEY_ID, ...)"),
            )
        })?;
        let credentials = provider.provide_credentials().await.map_err(|e| {
            ProviderError::new(ErrorKind::Unauthorized, format!("cannot sign a token for EKS cluster {name}: the AWS credentials are missing or expired: {e}. Refresh them (e.g. `aws sso login`) and run again"))
        })?;
        eks_token(&credentials, &region, &name, SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None, None, "test")
    }

    #[test]
    fn token_is_a_base64url_presigned_get_caller_identity_url() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let token = eks_token(&creds(), "eu-west-1", "cloud", now).unwrap();
        assert!(token.starts_with("k8s-aws-v1."), "{token}");
        let body = &token["k8s-aws-v1.".len()..];
        assert!(!body.contains('=') && !body.contains('+') && !body.contains('/'), "url-safe, unpadded: {body}");
        let url = String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
        assert!(url.starts_with("https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&"), "{url}");
        assert!(url.contains("X-Amz-Algorithm=AWS4-HMAC-SHA256"), "{url}");
        assert!(url.contains("X-Amz-Credential=AKIDEXAMPLE%2F20231114%2Feu-west-1%2Fsts%2Faws4_request"), "{url}");
        assert!(url.contains("X-Amz-Date=20231114T221320Z"), "{url}");
        assert!(url.contains("X-Amz-Expires=60"), "{url}");
        assert!(url.contains("X-Amz-SignedHeaders=host%3Bx-k8s-aws-id"), "{url}");
        assert!(url.contains("X-Amz-Signature="), "{url}");
        // The signature botocore computes for the same request (as `aws eks get-token` does):
        // RequestSigner.generate_presigned_url with x-k8s-aws-id: cloud, expires_in=60.
        assert!(url.ends_with("&X-Amz-Signature=51f63dba9996ecfa76f4a9f9241803a0dbdfff7019a37547f93a596d67eb7ee1"), "{url}");
        assert_eq!(
            token,
            "k8s-aws-v1.aHR0cHM6Ly9zdHMuZXUtd2VzdC0xLmFtYXpvbmF3cy5jb20vP0FjdGlvbj1HZXRDYWxsZXJJZGVudGl0eSZWZXJzaW9uPTIwMTEtMDYtMTUmWC1BbXotQWxnb3JpdGhtPUFXUzQtSE1BQy1TSEEyNTYmWC1BbXotQ3JlZGVudGlhbD1BS0lERVhBTVBMRSUyRjIwMjMxMTE0JTJGZXUtd2VzdC0xJTJGc3RzJTJGYXdzNF9yZXF1ZXN0JlgtQW16LURhdGU9MjAyMzExMTRUMjIxMzIwWiZYLUFtei1FeHBpcmVzPTYwJlgtQW16LVNpZ25lZEhlYWRlcnM9aG9zdCUzQngtazhzLWF3cy1pZCZYLUFtei1TaWduYXR1cmU9NTFmNjNkYmE5OTk2ZWNmYTc2ZjRhOWY5MjQxODAzYTBkYmRmZmY3MDE5YTM3NTQ3ZjkzYTU5NmQ2N2ViN2VlMQ",
            "the token botocore makes, byte for byte"
        );
        // Same input, same token; another cluster, another signature.
        assert_eq!(token, eks_token(&creds(), "eu-west-1", "cloud", now).unwrap());
        assert_ne!(token, eks_token(&creds(), "eu-west-1", "other", now).unwrap());
    }

    #[test]
    fn session_tokens_are_carried() {
        let c = Credentials::new("ASIAEXAMPLE", "secret", Some("session/token+x".into()), None, "test");
        let url = presigned_url(&c, "us-east-1", "c", SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)).unwrap();
        assert!(url.contains("X-Amz-Security-Token=session%2Ftoken%2Bx"), "{url}");
    }
}

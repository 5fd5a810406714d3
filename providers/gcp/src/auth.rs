//! OAuth access tokens for the Google APIs.
//!
//! The provider takes any [`AccessTokens`]: [`StaticToken`] for tests and for callers that
//! already hold a token (`gcloud auth print-access-token`), [`EnvToken`] reading
//! `GOOGLE_OAUTH_ACCESS_TOKEN`, [`AdcTokens`] (feature `adc`) application default credentials
//! through `gcp_auth` (GOOGLE_APPLICATION_CREDENTIALS, gcloud's ADC file, workload identity /
//! metadata server), and [`DefaultTokens`] the first of those two that applies.

use async_trait::async_trait;
use kdeploy_provider::{ErrorKind, ProviderError};

/// The OAuth scope every call of this provider needs (GKE, GCS, IAM).
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Issues OAuth 2 access tokens for the Google APIs (and for GKE's Kubernetes API server,
/// which accepts the same tokens).
#[async_trait]
pub trait AccessTokens: Send + Sync {
    async fn access_token(&self) -> Result<String, ProviderError>;
}

/// A fixed token.
pub struct StaticToken(pub String);

#[async_trait]
impl AccessTokens for StaticToken {
    async fn access_token(&self) -> Result<String, ProviderError> {
        Ok(self.0.clone())
    }
}

/// The token in `GOOGLE_OAUTH_ACCESS_TOKEN` (the variable the Terraform google provider reads),
/// looked up on every call.
pub struct EnvToken;

pub const TOKEN_ENV: &str = "GOOGLE_OAUTH_ACCESS_TOKEN";

#[async_trait]
impl AccessTokens for EnvToken {
    async fn access_token(&self) -> Result<String, ProviderError> {
        match std::env::var(TOKEN_ENV) {
            Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
            _ => Err(ProviderError::new(
                ErrorKind::Unauthorized,
                format!(
                    "no Google credentials: set {TOKEN_ENV} (e.g. to the output of `gcloud auth print-access-token`)"
                ),
            )),
        }
    }
}

/// Application default credentials through `gcp_auth`: GOOGLE_APPLICATION_CREDENTIALS (service
/// account or authorized-user JSON), gcloud's application default credentials file, then the
/// metadata server (GKE workload identity, GCE). Tokens are cached and refreshed by gcp_auth.
#[cfg(feature = "adc")]
pub struct AdcTokens {
    provider: std::sync::Arc<dyn gcp_auth::TokenProvider>,
}

#[cfg(feature = "adc")]
impl AdcTokens {
    /// Finds the credentials (no token is fetched yet).
    pub async fn discover() -> Result<AdcTokens, ProviderError> {
        gcp_auth::provider().await.map(|provider| AdcTokens { provider }).map_err(|e| {
            ProviderError::new(
                ErrorKind::Unauthorized,
                format!("no Google application default credentials: {e}. Set GOOGLE_APPLICATION_CREDENTIALS to a service account key file, run `gcloud auth application-default login`, or run with workload identity"),
            )
        })
    }

    /// A service account key given as JSON (the file GOOGLE_APPLICATION_CREDENTIALS names).
    pub fn from_service_account_json(json: &str) -> Result<AdcTokens, ProviderError> {
        let sa = gcp_auth::CustomServiceAccount::from_json(json).map_err(|e| {
            ProviderError::new(
                ErrorKind::Unauthorized,
                format!("invalid Google service account key: {e}"),
            )
        })?;
        Ok(AdcTokens {
            provider: std::sync::Arc::new(sa),
        })
    }

    /// The project of the credentials, when they name one.
    pub async fn project_id(&self) -> Option<String> {
        self.provider.project_id().await.ok().map(|p| p.to_string())
    }
}

#[cfg(feature = "adc")]
#[async_trait]
impl AccessTokens for AdcTokens {
    async fn access_token(&self) -> Result<String, ProviderError> {
        match self.provider.token(&[CLOUD_PLATFORM_SCOPE]).await {
            Ok(t) => Ok(t.as_str().to_string()),
            Err(e) => Err(ProviderError::new(
                ErrorKind::Unauthorized,
                format!(
                    "getting a Google access token failed: {e}. The credentials may be expired or revoked: refresh them (`gcloud auth application-default login`) or check GOOGLE_APPLICATION_CREDENTIALS"
                ),
            )),
        }
    }
}

/// The credentials a real run uses: GOOGLE_OAUTH_ACCESS_TOKEN when set, otherwise application
/// default credentials, discovered on first use (so that a stack without GCP components never
/// looks for them) and kept for the process.
#[cfg(feature = "adc")]
#[derive(Default)]
pub struct DefaultTokens {
    adc: tokio::sync::OnceCell<Result<AdcTokens, ProviderError>>,
}

#[cfg(feature = "adc")]
#[async_trait]
impl AccessTokens for DefaultTokens {
    async fn access_token(&self) -> Result<String, ProviderError> {
        if std::env::var(TOKEN_ENV).is_ok_and(|t| !t.trim().is_empty()) {
            return EnvToken.access_token().await;
        }
        match self.adc.get_or_init(AdcTokens::discover).await {
            Ok(adc) => adc.access_token().await,
            Err(e) => Err(e.clone()),
        }
    }
}

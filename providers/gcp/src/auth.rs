//! OAuth access tokens for the Google APIs.
//!
//! The provider takes any [`AccessTokens`]: [`StaticToken`] for tests and for callers that
//! already hold a token (`gcloud auth print-access-token`), [`EnvToken`] reading
//! `GOOGLE_OAUTH_ACCESS_TOKEN`, [`AdcTokens`] (feature `adc`) application default credentials
//! through `gcp_auth` (GOOGLE_APPLICATION_CREDENTIALS, gcloud's ADC file, workload identity /
//! metadata server) and, for `external_account` files (workload identity federation), through
//! [`crate::external`], and [`DefaultTokens`] the first of those two that applies.

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
                format!("no Google credentials: set {TOKEN_ENV} (e.g. to the output of `gcloud auth print-access-token`)"),
            )),
        }
    }
}

/// Application default credentials through `gcp_auth`: GOOGLE_APPLICATION_CREDENTIALS (service
/// account or authorized-user JSON), gcloud's application default credentials file, then the
/// metadata server (GKE workload identity, GCE). Tokens are cached and refreshed by gcp_auth.
/// Credentials files of type `external_account` (workload identity federation, e.g. in CI) are
/// served by [`crate::external`], which gcp_auth does not cover.
#[cfg(feature = "adc")]
pub struct AdcTokens {
    provider: Adc,
}

#[cfg(feature = "adc")]
enum Adc {
    GcpAuth(std::sync::Arc<dyn gcp_auth::TokenProvider>),
    External(Box<crate::external::ExternalAccountTokens>),
}

/// The credentials file application default credentials look at first: GOOGLE_APPLICATION_CREDENTIALS,
/// else gcloud's `application_default_credentials.json` (under CLOUDSDK_CONFIG or ~/.config/gcloud).
pub fn adc_file() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").filter(|p| !p.is_empty()) {
        return Some(p.into());
    }
    let dir = match std::env::var_os("CLOUDSDK_CONFIG").filter(|p| !p.is_empty()) {
        Some(d) => std::path::PathBuf::from(d),
        None => std::path::PathBuf::from(std::env::var_os("HOME")?).join(".config").join("gcloud"),
    };
    Some(dir.join("application_default_credentials.json")).filter(|p| p.is_file())
}

#[cfg(feature = "adc")]
impl AdcTokens {
    /// Finds the credentials (no token is fetched yet).
    pub async fn discover() -> Result<AdcTokens, ProviderError> {
        if let Some(path) = adc_file()
            && let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
            && json["type"] == "external_account"
        {
            return AdcTokens::from_external_account_json(&json, &path.display().to_string());
        }
        gcp_auth::provider().await.map(|provider| AdcTokens { provider: Adc::GcpAuth(provider) }).map_err(|e| {
            ProviderError::new(
                ErrorKind::Unauthorized,
                format!("no Google application default credentials: {e}. Set GOOGLE_APPLICATION_CREDENTIALS to a service account key file, run `gcloud auth application-default login`, or run with workload identity"),
            )
        })
    }

    /// A service account key given as JSON (the file GOOGLE_APPLICATION_CREDENTIALS names).
    pub fn from_service_account_json(json: &str) -> Result<AdcTokens, ProviderError> {
        let sa = gcp_auth::CustomServiceAccount::from_json(json)
            .map_err(|e| ProviderError::new(ErrorKind::Unauthorized, format!("invalid Google service account key: {e}")))?;
        Ok(AdcTokens { provider: Adc::GcpAuth(std::sync::Arc::new(sa)) })
    }

    /// A workload identity federation configuration (`"type": "external_account"`); `what`
    /// names it in errors.
    pub fn from_external_account_json(json: &serde_json::Value, what: &str) -> Result<AdcTokens, ProviderError> {
        let config = crate::external::ExternalAccount::from_json(json, what)?;
        Ok(AdcTokens { provider: Adc::External(Box::new(crate::external::ExternalAccountTokens::new(config, what)?)) })
    }

    /// The project of the credentials, when they name one.
    pub async fn project_id(&self) -> Option<String> {
        match &self.provider {
            Adc::GcpAuth(p) => p.project_id().await.ok().map(|p| p.to_string()),
            Adc::External(_) => None,
        }
    }
}

#[cfg(feature = "adc")]
#[async_trait]
impl AccessTokens for AdcTokens {
    async fn access_token(&self) -> Result<String, ProviderError> {
        let provider = match &self.provider {
            Adc::GcpAuth(p) => p,
            Adc::External(e) => return e.access_token().await,
        };
        match provider.token(&[CLOUD_PLATFORM_SCOPE]).await {
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

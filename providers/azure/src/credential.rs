//! Bearer tokens for Azure Resource Manager.
//!
//! [`Credential`] is the seam: tests use a [`StaticToken`]; real runs use [`from_env`]:
//!
//! * `AZURE_ACCESS_TOKEN`: an ARM access token obtained elsewhere, e.g.
//!   `az account get-access-token --query accessToken -o tsv` (valid ~1 h, never refreshed);
//! * `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET`: a service principal, via the
//!   Microsoft identity platform's client-credentials grant (scope
//!   `https://management.azure.com/.default`), cached and refreshed 5 minutes before expiry.
//!   `AZURE_AUTHORITY_HOST` overrides `https://login.microsoftonline.com`.
//!
//! Managed identity, workload identity and the az CLI cache are not implemented (azure_identity
//! 1.x could provide them behind this trait).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kdeploy_provider::{ErrorKind, ProviderError};
use tokio::sync::Mutex;

use crate::util::encode;

/// Issues ARM bearer tokens.
#[async_trait]
pub trait Credential: Send + Sync {
    async fn token(&self) -> Result<String, ProviderError>;
}

/// A fixed token (tests, or `AZURE_ACCESS_TOKEN`).
pub struct StaticToken(pub String);

#[async_trait]
impl Credential for StaticToken {
    async fn token(&self) -> Result<String, ProviderError> {
        Ok(self.0.clone())
    }
}

/// A service principal with a client secret (OAuth 2.0 client-credentials grant).
pub struct ClientSecretCredential {
    pub authority: String,
    pub tenant_id: String,
    pub client_id: String,
    client_secret: String,
    pub scope: String,
    http: reqwest::Client,
    cache: Mutex<Option<(String, Instant)>>,
}

impl ClientSecretCredential {
    pub fn new(authority: &str, tenant_id: &str, client_id: &str, client_secret: &str) -> ClientSecretCredential {
        ClientSecretCredential {
            authority: authority.trim_end_matches('/').to_string(),
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            scope: "https://management.azure.com/.default".into(),
            http: reqwest::Client::new(),
            cache: Mutex::new(None),
        }
    }
}

#[async_trait]
impl Credential for ClientSecretCredential {
    async fn token(&self) -> Result<String, ProviderError> {
        let mut cache = self.cache.lock().await;
        if let Some((t, until)) = cache.as_ref()
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let url = format!("{}/{}/oauth2/v2.0/token", self.authority, self.tenant_id);
        let body = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
            encode(&self.client_id),
            encode(&self.client_secret),
            encode(&self.scope)
        );
        let resp = self
            .http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| ProviderError::new(ErrorKind::Unreachable, format!("requesting an Azure token from {url}: {e}")))?;
        let status = resp.status();
        let json: serde_json::Value = resp.json().await.unwrap_or_default();
        if !status.is_success() {
            let code = json["error"].as_str().unwrap_or("error");
            let desc = json["error_description"].as_str().unwrap_or("").lines().next().unwrap_or("");
            return Err(ProviderError::new(
                ErrorKind::Unauthorized,
                format!("the service principal {} could not sign in to tenant {}: {status} {code}: {desc}. Check AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET", self.client_id, self.tenant_id),
            ));
        }
        let token = json["access_token"].as_str().ok_or_else(|| ProviderError::other("the Azure token response has no access_token"))?.to_string();
        let expires_in = json["expires_in"].as_u64().unwrap_or(3600);
        let until = Instant::now() + Duration::from_secs(expires_in.saturating_sub(300));
        *cache = Some((token.clone(), until));
        Ok(token)
    }
}

/// The credential configured in the environment (see the module docs).
pub fn from_env() -> Result<Arc<dyn Credential>, ProviderError> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(t) = var("AZURE_ACCESS_TOKEN") {
        return Ok(Arc::new(StaticToken(t)));
    }
    if let (Some(tenant), Some(client), Some(secret)) = (var("AZURE_TENANT_ID"), var("AZURE_CLIENT_ID"), var("AZURE_CLIENT_SECRET")) {
        let authority = var("AZURE_AUTHORITY_HOST").unwrap_or_else(|| "https://login.microsoftonline.com".into());
        return Ok(Arc::new(ClientSecretCredential::new(&authority, &tenant, &client, &secret)));
    }
    Err(ProviderError::new(
        ErrorKind::Unauthorized,
        "no Azure credentials: set AZURE_ACCESS_TOKEN (e.g. from `az account get-access-token`) or AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET for a service principal",
    ))
}

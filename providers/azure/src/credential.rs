//! Bearer tokens for Azure Resource Manager.
//!
//! [`Credential`] is the seam: tests use a [`StaticToken`]; real runs use [`from_env`], which
//! picks the first configured of (see [`select`]):
//!
//! 1. `AZURE_ACCESS_TOKEN`: an ARM access token obtained elsewhere, e.g.
//!    `az account get-access-token --query accessToken -o tsv` (valid ~1 h, never refreshed);
//! 2. `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET`: a service principal with a
//!    client secret ([`azure_identity::ClientSecretCredential`]);
//! 3. `AZURE_FEDERATED_TOKEN_FILE` + `AZURE_TENANT_ID` + `AZURE_CLIENT_ID`: workload identity
//!    ([`azure_identity::WorkloadIdentityCredential`]): the file holds a federated token (the
//!    projected service account token of AKS workload identity, or an OIDC token written by CI)
//!    that is exchanged for an Entra ID token; the file is re-read every 10 minutes;
//! 4. a managed identity ([`azure_identity::ManagedIdentityCredential`]) when
//!    `AZURE_USE_MANAGED_IDENTITY=true` (Azure VMs and scale sets: kdeploy never probes IMDS on
//!    its own) or when the platform sets `IDENTITY_ENDPOINT` (App Service, Container Apps, Arc);
//!    `AZURE_CLIENT_ID` selects a user-assigned identity;
//! 5. otherwise the Azure CLI login ([`azure_identity::AzureCliCredential`], i.e.
//!    `az account get-access-token`, for the subscription in `AZURE_SUBSCRIPTION_ID` when set).
//!    When that fails too (no `az`, or not logged in) the error lists every way to sign in.
//!
//! Tokens are requested for the scope `https://management.azure.com/.default`; when
//! `AZURE_RESOURCE_MANAGER_ENDPOINT` names another cloud, for that cloud's ARM audience
//! (see [`arm_scope`]). `AZURE_AUTHORITY_HOST` overrides the Microsoft Entra ID host
//! (`https://login.microsoftonline.com`; US Government and China clouds are inferred from the
//! ARM endpoint); it must use https. Tokens are cached until 5 minutes before they expire.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{AccessToken, Secret, TokenCredential};
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{AsyncRawResponse, ClientOptions, Context, ExponentialRetryOptions, Request, RetryOptions, Transport};
use azure_core::time::{Duration, OffsetDateTime};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions, Executor,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use kdeploy_provider::{ErrorKind, ProviderError};
use tokio::sync::Mutex;

/// The scope of ARM tokens in the public cloud.
pub const DEFAULT_SCOPE: &str = "https://management.azure.com/.default";

/// Every way to give kdeploy Azure credentials, for error messages.
pub const SIGN_IN_OPTIONS: &str = "Sign in to Azure in one of these ways: run `az login` (kdeploy then uses `az account get-access-token`); set AZURE_ACCESS_TOKEN to an ARM access token (e.g. from `az account get-access-token --query accessToken -o tsv`); set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET for a service principal; for workload identity (AKS, CI with OIDC federation), set AZURE_FEDERATED_TOKEN_FILE, AZURE_TENANT_ID and AZURE_CLIENT_ID; or, on an Azure VM with a managed identity, set AZURE_USE_MANAGED_IDENTITY=true";

/// Issues ARM bearer tokens.
#[async_trait]
pub trait Credential: Send + Sync {
    async fn token(&self) -> Result<String, ProviderError>;

    /// Which credential this is, for messages and tests; never contains a secret.
    fn describe(&self) -> String {
        "an Azure credential".into()
    }
}

/// A fixed token (tests, or `AZURE_ACCESS_TOKEN`).
pub struct StaticToken(pub String);

#[async_trait]
impl Credential for StaticToken {
    async fn token(&self) -> Result<String, ProviderError> {
        Ok(self.0.clone())
    }

    fn describe(&self) -> String {
        "a fixed access token".into()
    }
}

/// An `azure_identity` credential behind [`Credential`]: asks for [`IdentityCredential::scope`],
/// caches the token until 5 minutes before it expires (the Azure CLI credential does not cache),
/// and turns failures into provider errors that say which credential failed and how to fix it.
pub struct IdentityCredential {
    inner: Arc<dyn TokenCredential>,
    /// The OAuth scope, e.g. [`DEFAULT_SCOPE`].
    pub scope: String,
    /// Who tries to sign in, e.g. "the service principal X (tenant Y)".
    what: String,
    /// What to do when it fails.
    hint: String,
    /// Values never to show in a message (the client secret).
    redact: Vec<String>,
    cache: Mutex<Option<AccessToken>>,
}

impl fmt::Debug for IdentityCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityCredential").field("what", &self.what).field("scope", &self.scope).finish_non_exhaustive()
    }
}

/// The shortest secret [`IdentityCredential::redacting`] hides (Entra ID client secrets are 40
/// characters).
pub const MIN_REDACTED: usize = 8;

/// Token requests are retried a little, not for the SDK's default minute: a wrong
/// `AZURE_AUTHORITY_HOST` or an unreachable identity endpoint must fail a plan in seconds.
fn token_retry() -> RetryOptions {
    RetryOptions::exponential(ExponentialRetryOptions {
        initial_delay: azure_core::time::Duration::milliseconds(200),
        max_retries: 2,
        max_total_elapsed: azure_core::time::Duration::seconds(10),
        max_delay: azure_core::time::Duration::seconds(2),
    })
}

impl IdentityCredential {
    /// `what` names the credential in messages ("the service principal ..."), `hint` says what to
    /// check when it fails.
    pub fn new(inner: Arc<dyn TokenCredential>, scope: impl Into<String>, what: impl Into<String>, hint: impl Into<String>) -> IdentityCredential {
        IdentityCredential { inner, scope: scope.into(), what: what.into(), hint: hint.into(), redact: Vec::new(), cache: Mutex::new(None) }
    }

    /// Never shows `secret` in an error message. Secrets shorter than [`MIN_REDACTED`] are not
    /// searched for: replacing a one-letter "secret" everywhere would garble the message, and no
    /// real client secret is that short.
    pub fn redacting(mut self, secret: &str) -> IdentityCredential {
        if secret.chars().count() >= MIN_REDACTED {
            self.redact.push(secret.to_string());
        }
        self
    }

    fn error(&self, e: &azure_core::Error) -> ProviderError {
        let kind = if unreachable(e) { ErrorKind::Unreachable } else { ErrorKind::Unauthorized };
        let mut detail = summary(e);
        if let Some(status) = http_status(e) {
            detail = format!("{detail} (HTTP {})", u16::from(status));
        }
        for s in &self.redact {
            detail = detail.replace(s.as_str(), "***");
        }
        let message = format!("{} could not get an Azure Resource Manager token: {detail}. {}", self.what, self.hint);
        ProviderError::new(kind, message)
    }
}

#[async_trait]
impl Credential for IdentityCredential {
    async fn token(&self) -> Result<String, ProviderError> {
        let mut cache = self.cache.lock().await;
        if let Some(t) = cache.as_ref()
            && t.expires_on > OffsetDateTime::now_utc() + Duration::minutes(5)
        {
            return Ok(t.token.secret().to_string());
        }
        let t = self.inner.get_token(&[self.scope.as_str()], None).await.map_err(|e| self.error(&e))?;
        let token = t.token.secret().to_string();
        *cache = Some(t);
        Ok(token)
    }

    fn describe(&self) -> String {
        self.what.clone()
    }
}

/// Whether a transport failure (the sign-in host could not be reached) caused `e`.
fn unreachable(e: &azure_core::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = cur {
        if let Some(a) = x.downcast_ref::<azure_core::Error>()
            && matches!(a.kind(), azure_core::error::ErrorKind::Connection | azure_core::error::ErrorKind::Io)
        {
            return true;
        }
        cur = x.source();
    }
    false
}

/// The HTTP status of the sign-in host's answer, when one caused `e`.
fn http_status(e: &azure_core::Error) -> Option<azure_core::http::StatusCode> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = cur {
        if let Some(status) = x.downcast_ref::<azure_core::Error>().and_then(azure_core::Error::http_status) {
            return Some(status);
        }
        cur = x.source();
    }
    None
}

/// Works around azure_identity 1.0 failing to parse Entra ID error answers whose
/// `error_description` contains JSON escapes (real ones always do: `...\r\nTrace ID: ...`), which
/// would turn every sign-in failure into "invalid type: string ..., expected a borrowed string":
/// keeps the description's first line, without characters JSON escapes.
#[derive(Debug)]
struct PlainErrorDescriptions;

#[async_trait]
impl Policy for PlainErrorDescriptions {
    async fn send(&self, ctx: &Context, request: &mut Request, next: &[Arc<dyn Policy>]) -> PolicyResult {
        let resp = next[0].send(ctx, request, &next[1..]).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let (status, headers, body) = resp.deconstruct();
        let bytes = body.collect().await?;
        let bytes = match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(mut v) if v["error_description"].is_string() => {
                let first = v["error_description"].as_str().unwrap_or_default().lines().next().unwrap_or_default();
                let plain: String = first.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).collect();
                v["error_description"] = plain.trim().into();
                serde_json::to_vec(&v).map(Into::into).unwrap_or(bytes)
            }
            _ => bytes,
        };
        Ok(AsyncRawResponse::from_bytes(status, headers, bytes))
    }
}

/// A one-line account of an azure_core error and its causes, without trace ids, timestamps and
/// troubleshooting links.
fn summary(e: &azure_core::Error) -> String {
    let mut out = String::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = cur {
        let text = x.to_string();
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .filter(|l| !["To troubleshoot", "Trace ID", "Correlation ID", "Timestamp"].iter().any(|p| l.starts_with(p)))
            .collect();
        let part = lines.join(" ");
        if !part.is_empty() && !out.contains(&part) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&part);
        }
        cur = x.source();
    }
    let out = out.trim_end_matches('.').to_string();
    if out.chars().count() > 600 { format!("{}...", out.chars().take(600).collect::<String>()) } else { out }
}

/// Which credential the environment configures (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `AZURE_ACCESS_TOKEN`.
    AccessToken,
    /// `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET`.
    ServicePrincipal { tenant_id: String, client_id: String },
    /// `AZURE_FEDERATED_TOKEN_FILE` + `AZURE_TENANT_ID` + `AZURE_CLIENT_ID`.
    WorkloadIdentity { tenant_id: String, client_id: String, token_file: PathBuf },
    /// A managed identity (Azure VM, VM scale set, App Service, Container Apps, Arc):
    /// `AZURE_USE_MANAGED_IDENTITY=true`, or `IDENTITY_ENDPOINT` set by the platform; a
    /// user-assigned identity by its `AZURE_CLIENT_ID`.
    ManagedIdentity { client_id: Option<String> },
    /// The `az login` session, for `AZURE_SUBSCRIPTION_ID` when set.
    AzureCli { subscription: Option<String> },
}

/// Picks the credential from variables (`var` returns a variable's value; empty counts as unset).
/// A half-configured service principal or workload identity is an error rather than a silent
/// fallback to the Azure CLI.
pub fn select(var: impl Fn(&str) -> Option<String>) -> Result<Source, ProviderError> {
    let var = |k: &str| var(k).filter(|v| !v.trim().is_empty());
    if var("AZURE_ACCESS_TOKEN").is_some() {
        return Ok(Source::AccessToken);
    }
    let (tenant, client) = (var("AZURE_TENANT_ID"), var("AZURE_CLIENT_ID"));
    let missing = |names: &[(&str, bool)]| names.iter().filter(|(_, set)| !set).map(|(n, _)| *n).collect::<Vec<_>>().join(" and ");
    if var("AZURE_CLIENT_SECRET").is_some() {
        return match (tenant, client) {
            (Some(tenant_id), Some(client_id)) => Ok(Source::ServicePrincipal { tenant_id, client_id }),
            (t, c) => Err(ProviderError::new(
                ErrorKind::Unauthorized,
                format!(
                    "AZURE_CLIENT_SECRET is set but {} not: a service principal needs AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET. {SIGN_IN_OPTIONS}",
                    missing(&[("AZURE_TENANT_ID", t.is_some()), ("AZURE_CLIENT_ID", c.is_some())])
                ),
            )),
        };
    }
    if let Some(file) = var("AZURE_FEDERATED_TOKEN_FILE") {
        return match (tenant, client) {
            (Some(tenant_id), Some(client_id)) => Ok(Source::WorkloadIdentity { tenant_id, client_id, token_file: PathBuf::from(file) }),
            (t, c) => Err(ProviderError::new(
                ErrorKind::Unauthorized,
                format!(
                    "AZURE_FEDERATED_TOKEN_FILE is set but {} not: workload identity needs AZURE_FEDERATED_TOKEN_FILE, AZURE_TENANT_ID and AZURE_CLIENT_ID. {SIGN_IN_OPTIONS}",
                    missing(&[("AZURE_TENANT_ID", t.is_some()), ("AZURE_CLIENT_ID", c.is_some())])
                ),
            )),
        };
    }
    let use_msi = var("AZURE_USE_MANAGED_IDENTITY").map(|v| v.trim().to_ascii_lowercase());
    match use_msi.as_deref() {
        Some("true" | "1" | "yes") => return Ok(Source::ManagedIdentity { client_id: client }),
        Some("false" | "0" | "no") => {}
        Some(other) => {
            return Err(ProviderError::new(ErrorKind::Invalid, format!("AZURE_USE_MANAGED_IDENTITY={other:?} is neither true nor false")));
        }
        None if var("IDENTITY_ENDPOINT").is_some() => return Ok(Source::ManagedIdentity { client_id: client }),
        None => {}
    }
    Ok(Source::AzureCli { subscription: var("AZURE_SUBSCRIPTION_ID") })
}

/// The ARM token scope for an ARM endpoint (`AZURE_RESOURCE_MANAGER_ENDPOINT`): the public
/// cloud's [`DEFAULT_SCOPE`] when unset, the documented audiences of the US Government and China
/// clouds, `<endpoint>/.default` for other https endpoints (Azure Stack, other sovereign clouds),
/// and [`DEFAULT_SCOPE`] for plain-http endpoints (local mocks).
pub fn arm_scope(endpoint: Option<&str>) -> String {
    let Some(e) = endpoint.map(|e| e.trim().trim_end_matches('/')).filter(|e| !e.is_empty()) else {
        return DEFAULT_SCOPE.into();
    };
    match e.to_ascii_lowercase().as_str() {
        "https://management.azure.com" => DEFAULT_SCOPE.into(),
        "https://management.usgovcloudapi.net" => "https://management.core.usgovcloudapi.net/.default".into(),
        "https://management.chinacloudapi.cn" => "https://management.core.chinacloudapi.cn/.default".into(),
        l if l.starts_with("https://") => format!("{e}/.default"),
        _ => DEFAULT_SCOPE.into(),
    }
}

/// The Entra ID cloud: `AZURE_AUTHORITY_HOST` when set, else inferred from the ARM endpoint.
fn cloud(var: &impl Fn(&str) -> Option<String>) -> Arc<CloudConfiguration> {
    if let Some(host) = var("AZURE_AUTHORITY_HOST") {
        let mut custom = CustomConfiguration::default();
        custom.authority_host = host.trim().to_string();
        return Arc::new(custom.into());
    }
    let endpoint = var("AZURE_RESOURCE_MANAGER_ENDPOINT").unwrap_or_default().to_ascii_lowercase();
    Arc::new(if endpoint.contains(".usgovcloudapi.net") {
        CloudConfiguration::AzureGovernment
    } else if endpoint.contains(".chinacloudapi.cn") {
        CloudConfiguration::AzureChina
    } else {
        CloudConfiguration::AzurePublic
    })
}

/// Hooks for [`from_lookup`]; the defaults are right for real runs.
#[derive(Clone, Default)]
pub struct Options {
    /// The HTTP client for Entra ID token requests (default: azure_core's). Tests redirect it to
    /// a local mock, since azure_identity only talks https to the authority host.
    pub transport: Option<Transport>,
    /// Runs `az` for the Azure CLI credential (default: a child process).
    pub executor: Option<Arc<dyn Executor>>,
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options").field("transport", &self.transport.is_some()).field("executor", &self.executor.is_some()).finish()
    }
}

/// The credential configured in the process environment (see the module docs).
pub fn from_env() -> Result<Arc<dyn Credential>, ProviderError> {
    from_lookup(|k| std::env::var(k).ok(), Options::default())
}

/// The credential configured by `var` (a variable's value; empty counts as unset), so that the
/// choice can be tested without touching the process environment. Nothing is requested yet;
/// only the workload identity token file is read.
pub fn from_lookup(var: impl Fn(&str) -> Option<String>, options: Options) -> Result<Arc<dyn Credential>, ProviderError> {
    let var = move |k: &str| var(k).filter(|v| !v.trim().is_empty());
    let source = select(&var)?;
    let scope = arm_scope(var("AZURE_RESOURCE_MANAGER_ENDPOINT").as_deref());
    let client_options = || ClientOptions {
        transport: options.transport.clone(),
        cloud: Some(cloud(&var)),
        per_call_policies: vec![Arc::new(PlainErrorDescriptions)],
        retry: token_retry(),
        ..Default::default()
    };
    let config_error =
        |what: &str, e: azure_core::Error, hint: &str| ProviderError::new(ErrorKind::Invalid, format!("{what} cannot be used: {}. {hint}", summary(&e)));
    match source {
        Source::AccessToken => Ok(Arc::new(StaticToken(var("AZURE_ACCESS_TOKEN").unwrap_or_default().trim().to_string()))),
        Source::ServicePrincipal { tenant_id, client_id } => {
            let secret = var("AZURE_CLIENT_SECRET").unwrap_or_default();
            let what = format!("the service principal {client_id} (tenant {tenant_id}, from AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET)");
            let hint = "Check AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (the secret may have expired: create a new one with `az ad app credential reset`), and AZURE_AUTHORITY_HOST for sovereign clouds";
            let inner = ClientSecretCredential::new(
                &tenant_id,
                client_id.clone(),
                Secret::new(secret.clone()),
                Some(ClientSecretCredentialOptions { client_options: client_options() }),
            )
            .map_err(|e| config_error(&what, e, hint))?;
            Ok(Arc::new(IdentityCredential::new(inner, scope, what, hint).redacting(&secret)))
        }
        Source::WorkloadIdentity { tenant_id, client_id, token_file } => {
            let what = format!("workload identity (client {client_id}, tenant {tenant_id}, federated token file {})", token_file.display());
            let hint = "Check AZURE_FEDERATED_TOKEN_FILE, AZURE_TENANT_ID and AZURE_CLIENT_ID, and that the app registration or managed identity has a federated credential for this token's issuer and subject";
            let inner = WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions { client_options: client_options() },
                client_id: Some(client_id),
                tenant_id: Some(tenant_id),
                token_file_path: Some(token_file),
            }))
            .map_err(|e| config_error(&what, e, hint))?;
            Ok(Arc::new(IdentityCredential::new(inner, scope, what, hint)))
        }
        Source::ManagedIdentity { client_id } => {
            let what = match &client_id {
                Some(c) => format!("the user-assigned managed identity {c} (AZURE_USE_MANAGED_IDENTITY, AZURE_CLIENT_ID)"),
                None => "the system-assigned managed identity (AZURE_USE_MANAGED_IDENTITY)".to_string(),
            };
            let hint = "Check that this machine has that managed identity assigned and that it has a role (e.g. Contributor) on the subscription; outside Azure, unset AZURE_USE_MANAGED_IDENTITY";
            let inner = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.map(UserAssignedId::ClientId),
                client_options: client_options(),
            }))
            .map_err(|e| config_error(&what, e, hint))?;
            Ok(Arc::new(IdentityCredential::new(inner, scope, what, hint)))
        }
        Source::AzureCli { subscription } => {
            let what = match &subscription {
                Some(s) => format!("the Azure CLI login (`az account get-access-token --subscription {s}`)"),
                None => "the Azure CLI login (`az account get-access-token`)".to_string(),
            };
            let hint = format!("No other Azure credentials are configured. {SIGN_IN_OPTIONS}");
            let inner = AzureCliCredential::new(Some(AzureCliCredentialOptions { subscription, executor: options.executor.clone(), ..Default::default() }))
                .map_err(|e| config_error(&what, e, &hint))?;
            Ok(Arc::new(IdentityCredential::new(inner, scope, what, hint)))
        }
    }
}

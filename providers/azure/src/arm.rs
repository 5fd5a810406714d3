//! A small Azure Resource Manager REST client: bearer auth, pinned api-versions, CloudError
//! mapping, 429 retries with Retry-After, and long-running operations followed through their
//! `Azure-AsyncOperation` or `Location` headers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kdeploy_provider::{ErrorKind, ProviderError};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value as Json;

use crate::credential::Credential;

pub const API_RESOURCE_GROUPS: &str = "2021-04-01";
pub const API_MANAGED_CLUSTERS: &str = "2024-05-01";
pub const API_STORAGE: &str = "2023-05-01";

pub const DEFAULT_ENDPOINT: &str = "https://management.azure.com";

/// Attempts per request when ARM answers 429 Too Many Requests.
pub const MAX_ATTEMPTS: u32 = 3;

/// Progress lines for long waits (`what: status`).
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

pub struct Arm {
    /// `https://management.azure.com` (no trailing slash).
    pub endpoint: String,
    pub subscription_id: String,
    credential: Arc<dyn Credential>,
    http: reqwest::Client,
    /// Delay between polls when ARM gives no Retry-After.
    pub poll_interval: Duration,
    /// Upper bound for any single wait (Retry-After included); tests make it tiny.
    pub max_wait: Duration,
    /// Give up on a long-running operation after this long.
    pub lro_timeout: Duration,
    pub progress: Progress,
}

/// One ARM answer.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Json,
}

impl Response {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
    /// Retry-After in seconds (ARM sends seconds; an HTTP date is ignored).
    pub fn retry_after(&self) -> Option<Duration> {
        self.header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs)
    }
}

impl Arm {
    pub fn new(endpoint: &str, subscription_id: &str, credential: Arc<dyn Credential>) -> Arm {
        Arm {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            subscription_id: subscription_id.to_string(),
            credential,
            http: reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap_or_default(),
            poll_interval: Duration::from_secs(10),
            max_wait: Duration::from_secs(60),
            lro_timeout: Duration::from_secs(45 * 60),
            progress: Arc::new(|line| eprintln!("{line}")),
        }
    }

    /// The HTTP client (also for the Blob service data plane).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `/subscriptions/{id}`.
    pub fn sub(&self) -> String {
        format!("/subscriptions/{}", self.subscription_id)
    }

    fn url(&self, path: &str, api_version: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}api-version={api_version}", self.endpoint)
    }

    async fn wait(&self, d: Option<Duration>) {
        tokio::time::sleep(d.unwrap_or(self.poll_interval).min(self.max_wait)).await;
    }

    /// Sends one request, retrying 429s (up to [`MAX_ATTEMPTS`]) after their Retry-After.
    /// Any status comes back; only transport failures are errors.
    pub async fn send(&self, method: Method, url: &str, body: Option<&Json>, what: &str) -> Result<Response, ProviderError> {
        let same_origin = url.strip_prefix(&self.endpoint).is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'));
        if !same_origin {
            return Err(ProviderError::other(format!("{what}: ARM pointed at {url}, outside {}; not sending credentials there", self.endpoint)));
        }
        let mut attempt = 1;
        loop {
            let token = self.credential.token().await?;
            let mut req = self.http.request(method.clone(), url).bearer_auth(token);
            if let Some(b) = body {
                req = req.json(b);
            } else if method == Method::POST {
                req = req.header("content-length", "0");
            }
            let resp = req
                .send()
                .await
                .map_err(|e| ProviderError::new(ErrorKind::Unreachable, format!("{what}: cannot reach Azure Resource Manager at {}: {e}", self.endpoint)))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let text = resp.text().await.unwrap_or_default();
            let body = if text.trim().is_empty() { Json::Null } else { serde_json::from_str(&text).unwrap_or(Json::String(text)) };
            let r = Response { status, headers, body };
            if status == StatusCode::TOO_MANY_REQUESTS && attempt < MAX_ATTEMPTS {
                let wait = r.retry_after().unwrap_or(Duration::from_secs(10 * attempt as u64));
                (self.progress)(&format!("{what}: throttled by Azure (429), retrying in {}s (attempt {}/{MAX_ATTEMPTS})", wait.as_secs(), attempt + 1));
                self.wait(Some(wait)).await;
                attempt += 1;
                continue;
            }
            return Ok(r);
        }
    }

    /// GET a resource; `None` when it does not exist (404).
    pub async fn get(&self, path: &str, api_version: &str, what: &str) -> Result<Option<Json>, ProviderError> {
        let r = self.send(Method::GET, &self.url(path, api_version), None, what).await?;
        match r.status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(r.body)),
            _ => Err(error(what, &r)),
        }
    }

    /// PUT a resource and wait for it: follows the long-running operation if ARM starts one,
    /// then GETs the resource until its provisioningState is terminal.
    pub async fn put(&self, path: &str, api_version: &str, body: &Json, what: &str) -> Result<Json, ProviderError> {
        let r = self.send(Method::PUT, &self.url(path, api_version), Some(body), what).await?;
        if !r.status.is_success() {
            return Err(error(what, &r));
        }
        self.follow(&r, what).await?;
        let start = Instant::now();
        let mut last = String::new();
        loop {
            let Some(live) = self.get(path, api_version, what).await? else {
                return Err(ProviderError::other(format!("{what}: ARM accepted the request but the resource does not exist afterwards")));
            };
            let state = live["properties"]["provisioningState"].as_str().unwrap_or("Succeeded").to_string();
            match state.as_str() {
                "Succeeded" => return Ok(live),
                "Failed" | "Canceled" => return Err(ProviderError::other(format!("{what}: provisioningState {state}"))),
                _ => {}
            }
            if start.elapsed() > self.lro_timeout {
                return Err(ProviderError::new(ErrorKind::Timeout, format!("{what}: still {state} after {}s", self.lro_timeout.as_secs())));
            }
            if state != last {
                (self.progress)(&format!("{what}: {state}"));
                last = state;
            }
            self.wait(None).await;
        }
    }

    /// POST an action (listKeys, listClusterUserCredential) and return its result.
    pub async fn post(&self, path: &str, api_version: &str, what: &str) -> Result<Json, ProviderError> {
        let r = self.send(Method::POST, &self.url(path, api_version), None, what).await?;
        if !r.status.is_success() {
            return Err(error(what, &r));
        }
        if r.status == StatusCode::ACCEPTED {
            return self.follow(&r, what).await;
        }
        Ok(r.body)
    }

    /// DELETE a resource and wait until it is gone; a missing resource is fine.
    pub async fn delete(&self, path: &str, api_version: &str, what: &str) -> Result<(), ProviderError> {
        let r = self.send(Method::DELETE, &self.url(path, api_version), None, what).await?;
        match r.status {
            StatusCode::NOT_FOUND | StatusCode::NO_CONTENT => Ok(()),
            s if s.is_success() => self.follow(&r, what).await.map(|_| ()),
            _ => Err(error(what, &r)),
        }
    }

    /// Follows a long-running operation: `Azure-AsyncOperation` (poll until its status is
    /// Succeeded, Failed or Canceled) wins over `Location` (poll until it stops answering 202).
    /// Returns the final body of a Location poll (an action's result), else null.
    pub async fn follow(&self, first: &Response, what: &str) -> Result<Json, ProviderError> {
        let start = Instant::now();
        let mut delay = first.retry_after();
        if let Some(url) = first.header("azure-asyncoperation") {
            let mut last = String::new();
            loop {
                self.timeout_check(start, what)?;
                self.wait(delay).await;
                let r = self.send(Method::GET, &url, None, what).await?;
                if !r.status.is_success() {
                    return Err(error(what, &r));
                }
                let status = r.body["status"].as_str().unwrap_or("InProgress").to_string();
                match status.as_str() {
                    "Succeeded" => return Ok(Json::Null),
                    "Failed" | "Canceled" => {
                        let e = &r.body["error"];
                        return Err(ProviderError::other(format!(
                            "{what}: the operation {}: {}: {}",
                            status.to_lowercase(),
                            e["code"].as_str().unwrap_or("error"),
                            e["message"].as_str().unwrap_or("no details")
                        )));
                    }
                    _ => {}
                }
                if status != last {
                    (self.progress)(&format!("{what}: {status}"));
                    last = status;
                }
                delay = r.retry_after();
            }
        }
        if let Some(url) = first.header("location") {
            loop {
                self.timeout_check(start, what)?;
                self.wait(delay).await;
                let r = self.send(Method::GET, &url, None, what).await?;
                if r.status == StatusCode::ACCEPTED {
                    (self.progress)(&format!("{what}: in progress"));
                    delay = r.retry_after();
                    continue;
                }
                if !r.status.is_success() {
                    return Err(error(what, &r));
                }
                return Ok(r.body);
            }
        }
        Ok(first.body.clone())
    }

    fn timeout_check(&self, start: Instant, what: &str) -> Result<(), ProviderError> {
        if start.elapsed() > self.lro_timeout {
            return Err(ProviderError::new(ErrorKind::Timeout, format!("{what}: not done after {}s", self.lro_timeout.as_secs())));
        }
        Ok(())
    }
}

/// Maps an ARM error answer (a CloudError body `{"error": {"code", "message"}}`) to a provider
/// error that says what failed and what to do. Never includes the token.
pub fn error(what: &str, r: &Response) -> ProviderError {
    let code = r.body["error"]["code"].as_str().unwrap_or_default();
    let message = r.body["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| match &r.body {
        Json::String(s) => s.chars().take(300).collect(),
        _ => String::new(),
    });
    let (kind, hint) = match (r.status.as_u16(), code) {
        (401, "ExpiredAuthenticationToken") => (
            ErrorKind::Unauthorized,
            ". The Azure access token has expired: get a fresh one (`az account get-access-token`, or let the service principal sign in again)",
        ),
        (401, "InvalidAuthenticationTokenTenant") => (
            ErrorKind::Unauthorized,
            ". The access token was issued by a different tenant than the subscription's: sign in to the subscription's tenant (AZURE_TENANT_ID / `az login --tenant`)",
        ),
        (401, _) => (
            ErrorKind::Unauthorized,
            ". Check the Azure credentials (AZURE_ACCESS_TOKEN, AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET, AZURE_FEDERATED_TOKEN_FILE, or the `az login` session)",
        ),
        (403, _) => (
            ErrorKind::Unauthorized,
            ". The identity lacks a role for this: grant it Contributor (or a custom role allowing this action) on the subscription or resource group",
        ),
        (409, _) => (ErrorKind::Conflict, ""),
        (400 | 422, _) => (ErrorKind::Invalid, ""),
        (429, _) => (ErrorKind::Other, ". Azure kept throttling after retries; wait a few minutes and run again"),
        _ => (ErrorKind::Other, ""),
    };
    let code = if code.is_empty() { String::new() } else { format!(" {code}") };
    let message = if message.is_empty() { String::new() } else { format!(": {message}") };
    ProviderError::new(kind, format!("{what}: {}{code}{message}{hint}", r.status.as_u16()))
}

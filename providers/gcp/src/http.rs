//! JSON over HTTPS to the Google REST APIs, with an explicit retry policy and google.rpc
//! error bodies mapped to provider errors.

use std::sync::Arc;
use std::time::Duration;

use kdeploy_provider::{ErrorKind, ProviderError, error_chain};
use reqwest::{Method, StatusCode};
use serde_json::Value as Json;

use crate::auth::AccessTokens;

/// When and how often a request is retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all (the first one included).
    pub max_attempts: u32,
    /// Backoff before the second attempt, doubled for each further one, unless the response
    /// says `Retry-After`.
    pub base_backoff: Duration,
    /// The longest wait honoured from `Retry-After` (longer values are capped).
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    /// Time for one attempt, response body included.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    /// At most 3 attempts; 1 s then 2 s backoff (or `Retry-After`, capped at 30 s) on 429 and
    /// 503 only; connect timeout 10 s; 60 s per request.
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Only rate limiting and unavailability are retried: every other 4xx is final.
    pub fn retryable(status: StatusCode) -> bool {
        status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
    }

    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        retry_after.unwrap_or_else(|| self.base_backoff * 2u32.pow(attempt.saturating_sub(1))).min(self.max_backoff)
    }
}

/// A failed API call: the HTTP status and the google.rpc error.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    /// `error.status` (e.g. NOT_FOUND, PERMISSION_DENIED) or the first `errors[].reason`.
    pub reason: String,
    pub message: String,
}

impl ApiError {
    pub fn is_not_found(&self) -> bool {
        self.status == 404
    }

    pub fn is_conflict(&self) -> bool {
        self.status == 409
    }

    /// The provider error for `what` failing, with a hint for credential problems.
    pub fn to_provider(&self, what: &str) -> ProviderError {
        let kind = match self.status {
            0 => ErrorKind::Unreachable,
            401 | 403 => ErrorKind::Unauthorized,
            400 | 411 | 412 | 413 | 422 => ErrorKind::Invalid,
            409 => ErrorKind::Conflict,
            408 | 504 => ErrorKind::Timeout,
            _ => ErrorKind::Other,
        };
        let hint = match self.status {
            401 => {
                ". The Google credentials are missing, invalid or expired: refresh them (`gcloud auth application-default login`, a new GOOGLE_OAUTH_ACCESS_TOKEN, or check GOOGLE_APPLICATION_CREDENTIALS)"
            }
            403 => {
                ". The Google credentials lack permission for this call, or the API is not enabled in the project: check the account's IAM roles (roles/container.admin, roles/storage.admin, roles/iam.serviceAccountAdmin) and enable container.googleapis.com / storage.googleapis.com"
            }
            0 => ". Check the network (and the configured API base URLs)",
            _ => "",
        };
        let status = if self.status == 0 { String::new() } else { format!("HTTP {} ", self.status) };
        let reason = if self.reason.is_empty() { String::new() } else { format!("{}: ", self.reason) };
        ProviderError::new(kind, format!("{what}: {status}{reason}{}{hint}", self.message))
    }
}

/// Reads a google.rpc error body (`{"error": {"code", "message", "status", "errors": [...]}}`).
pub fn parse_error(status: u16, body: &str) -> ApiError {
    let json: Json = serde_json::from_str(body).unwrap_or(Json::Null);
    let e = &json["error"];
    let message = e["message"].as_str().map(str::to_string).unwrap_or_else(|| {
        let t = body.trim();
        if t.is_empty() {
            StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("error").to_string()
        } else {
            t.chars().take(300).collect()
        }
    });
    let reason = e["status"].as_str().or_else(|| e["errors"][0]["reason"].as_str()).unwrap_or_default().to_string();
    ApiError { status, reason, message }
}

/// An authenticated JSON client for the Google APIs.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    tokens: Arc<dyn AccessTokens>,
    pub retry: RetryPolicy,
}

impl Api {
    pub fn new(tokens: Arc<dyn AccessTokens>, retry: RetryPolicy) -> Result<Api, ProviderError> {
        let http = reqwest::Client::builder()
            .connect_timeout(retry.connect_timeout)
            .timeout(retry.request_timeout)
            .user_agent(concat!("kdeploy-provider-gcp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::other(format!("cannot build the HTTP client: {e}")))?;
        Ok(Api { http, tokens, retry })
    }

    pub async fn token(&self) -> Result<String, ProviderError> {
        self.tokens.access_token().await
    }

    /// Sends one request under the retry policy. `Ok(Json::Null)` for an empty body.
    /// Errors: `Err(Ok(api))` for an API error, `Err(Err(provider))` for no token.
    pub async fn call(&self, method: Method, url: &str, body: Option<&Json>) -> Result<Json, CallError> {
        let token = self.token().await.map_err(CallError::Token)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.http.request(method.clone(), url).bearer_auth(&token);
            if let Some(b) = body {
                req = req.json(b);
            }
            let (status, retry_after, text) = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    match resp.text().await {
                        Ok(t) => (status, retry_after, t),
                        Err(e) => {
                            return Err(CallError::Api(ApiError {
                                status: 0,
                                reason: String::new(),
                                message: format!("reading the response of {method} {url}: {e}"),
                            }));
                        }
                    }
                }
                Err(e) => {
                    let message = if e.is_timeout() { format!("{method} {url} timed out") } else { format!("{method} {url}: {}", error_chain(&e)) };
                    return Err(CallError::Api(ApiError { status: 0, reason: String::new(), message }));
                }
            };
            if status.is_success() {
                if text.trim().is_empty() {
                    return Ok(Json::Null);
                }
                return serde_json::from_str(&text).map_err(|e| {
                    CallError::Api(ApiError { status: status.as_u16(), reason: String::new(), message: format!("invalid JSON from {method} {url}: {e}") })
                });
            }
            if RetryPolicy::retryable(status) && attempt < self.retry.max_attempts {
                tokio::time::sleep(self.retry.backoff(attempt, retry_after)).await;
                continue;
            }
            let mut err = parse_error(status.as_u16(), &text);
            if RetryPolicy::retryable(status) {
                err.message = format!("{} (gave up after {attempt} attempts)", err.message);
            }
            return Err(CallError::Api(err));
        }
    }

    pub async fn get(&self, url: &str) -> Result<Json, CallError> {
        self.call(Method::GET, url, None).await
    }

    /// GET that maps 404 to None.
    pub async fn get_opt(&self, url: &str) -> Result<Option<Json>, CallError> {
        match self.get(url).await {
            Ok(j) => Ok(Some(j)),
            Err(CallError::Api(e)) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone)]
pub enum CallError {
    Token(ProviderError),
    Api(ApiError),
}

impl CallError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, CallError::Api(e) if e.is_not_found())
    }
    pub fn is_conflict(&self) -> bool {
        matches!(self, CallError::Api(e) if e.is_conflict())
    }
    pub fn into_provider(self, what: &str) -> ProviderError {
        match self {
            CallError::Token(e) => ProviderError::new(e.kind, format!("{what}: {}", e.message)),
            CallError::Api(e) => e.to_provider(what),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_rpc_errors_map_to_kinds() {
        let body = r#"{"error":{"code":403,"message":"Permission denied on resource project p.","status":"PERMISSION_DENIED"}}"#;
        let e = parse_error(403, body).to_provider("creating cluster");
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        assert!(e.message.contains("PERMISSION_DENIED: Permission denied"), "{}", e.message);
        let gcs = r#"{"error":{"code":409,"message":"You already own this bucket.","errors":[{"reason":"conflict","message":"x"}]}}"#;
        let e = parse_error(409, gcs);
        assert_eq!(e.reason, "conflict");
        assert_eq!(e.to_provider("x").kind, ErrorKind::Conflict);
        assert_eq!(parse_error(502, "").message, "Bad Gateway");
    }

    #[test]
    fn backoff_honours_retry_after_within_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1, None), Duration::from_secs(1));
        assert_eq!(p.backoff(2, None), Duration::from_secs(2));
        assert_eq!(p.backoff(1, Some(Duration::from_secs(7))), Duration::from_secs(7));
        assert_eq!(p.backoff(1, Some(Duration::from_secs(700))), Duration::from_secs(30));
        assert!(RetryPolicy::retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(!RetryPolicy::retryable(StatusCode::FORBIDDEN));
        assert!(!RetryPolicy::retryable(StatusCode::CONFLICT));
    }
}

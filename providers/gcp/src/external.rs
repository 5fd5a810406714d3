//! Workload identity federation: credentials files of `"type": "external_account"`, as written by
//! `gcloud iam workload-identity-pools create-cred-config` or by CI (google-github-actions/auth,
//! GitLab's GCP integration) and named by GOOGLE_APPLICATION_CREDENTIALS.
//!
//! The flow follows Google's documented token exchange (AIP-4117):
//!
//! 1. read the subject token (an OIDC JWT or SAML assertion) from the configured `file` or `url`
//!    (plain text, or JSON with `subject_token_field_name`);
//! 2. exchange it at the Security Token Service (`token_url`, normally
//!    `https://sts.googleapis.com/v1/token`) for a federated access token;
//! 3. when `service_account_impersonation_url` is set, call IAM Credentials'
//!    `generateAccessToken` with that token to get the service account's access token.
//!
//! Tokens are cached until five minutes before they expire. AWS- and executable-sourced
//! configurations are refused with a message saying what to use instead.

use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use kdeploy_provider::{ErrorKind, ProviderError};
use serde_json::{Value as Json, json};
use tokio::sync::Mutex;

use crate::auth::{AccessTokens, CLOUD_PLATFORM_SCOPE};
use crate::util::enc;

/// Where the subject token comes from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    File(String),
    Url { url: String, headers: Vec<(String, String)> },
}

/// An `external_account` credentials configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalAccount {
    audience: String,
    subject_token_type: String,
    token_url: String,
    impersonation_url: Option<String>,
    source: Source,
    /// `None`: the source is plain text; `Some(field)`: JSON, the token in `field`.
    json_field: Option<String>,
}

fn invalid(what: &str, message: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(ErrorKind::Unauthorized, format!("{what}: {message}"))
}

impl ExternalAccount {
    /// Parses the configuration; `what` names it in errors (e.g. the file path).
    pub fn from_json(json: &Json, what: &str) -> Result<ExternalAccount, ProviderError> {
        if json["type"] != "external_account" {
            return Err(invalid(what, format!("type is {}, not \"external_account\"", json["type"])));
        }
        let field = |k: &str| json[k].as_str().filter(|v| !v.is_empty()).map(str::to_string);
        let audience = field("audience").ok_or_else(|| invalid(what, "no audience (the workload identity pool provider)"))?;
        let subject_token_type = field("subject_token_type").ok_or_else(|| invalid(what, "no subject_token_type"))?;
        let token_url = field("token_url").unwrap_or_else(|| "https://sts.googleapis.com/v1/token".into());
        let cs = &json["credential_source"];
        if cs["environment_id"].is_string() {
            return Err(invalid(
                what,
                "AWS-sourced workload identity federation is not supported by kdeploy; give a credential_source with a file or url (or set GOOGLE_OAUTH_ACCESS_TOKEN from `gcloud auth print-access-token`)",
            ));
        }
        if cs["executable"].is_object() {
            return Err(invalid(
                what,
                "executable-sourced credentials are not supported by kdeploy; give a credential_source with a file or url (or set GOOGLE_OAUTH_ACCESS_TOKEN from `gcloud auth print-access-token`)",
            ));
        }
        let source = if let Some(f) = cs["file"].as_str() {
            Source::File(f.to_string())
        } else if let Some(u) = cs["url"].as_str() {
            let headers =
                cs["headers"].as_object().map(|h| h.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))).collect()).unwrap_or_default();
            Source::Url { url: u.to_string(), headers }
        } else {
            return Err(invalid(what, "credential_source has neither file nor url"));
        };
        let json_field = match cs["format"]["type"].as_str() {
            None | Some("text") => None,
            Some("json") => Some(
                cs["format"]["subject_token_field_name"]
                    .as_str()
                    .ok_or_else(|| invalid(what, "credential_source.format is json but has no subject_token_field_name"))?
                    .to_string(),
            ),
            Some(other) => return Err(invalid(what, format!("unknown credential_source.format.type {other:?} (expected text or json)"))),
        };
        Ok(ExternalAccount { audience, subject_token_type, token_url, impersonation_url: field("service_account_impersonation_url"), source, json_field })
    }
}

/// Access tokens from an [`ExternalAccount`].
pub struct ExternalAccountTokens {
    config: ExternalAccount,
    what: String,
    http: reqwest::Client,
    cache: Mutex<Option<(String, Instant)>>,
}

impl ExternalAccountTokens {
    pub fn new(config: ExternalAccount, what: &str) -> Result<ExternalAccountTokens, ProviderError> {
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(30)).build().map_err(|e| ProviderError::other(format!("building the HTTP client: {e}")))?;
        Ok(ExternalAccountTokens { config, what: what.to_string(), http, cache: Mutex::new(None) })
    }

    fn fail(&self, message: impl std::fmt::Display) -> ProviderError {
        ProviderError::new(
            ErrorKind::Unauthorized,
            format!(
                "workload identity federation ({}) failed: {message}. Check the workload identity pool provider (audience {}), its attribute conditions, and that the CI job may request an ID token",
                self.what, self.config.audience
            ),
        )
    }

    async fn subject_token(&self) -> Result<String, ProviderError> {
        let raw = match &self.config.source {
            Source::File(path) => tokio::fs::read_to_string(path).await.map_err(|e| self.fail(format!("reading the subject token file {path}: {e}")))?,
            Source::Url { url, headers } => {
                let mut req = self.http.get(url);
                for (k, v) in headers {
                    req = req.header(k, v);
                }
                let resp = req.send().await.map_err(|e| self.fail(format!("fetching the subject token from {}: {e}", strip_query(url))))?;
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                if !status.is_success() {
                    return Err(self.fail(format!("fetching the subject token from {}: HTTP {status}", strip_query(url))));
                }
                body
            }
        };
        let token = match &self.config.json_field {
            None => raw.trim().to_string(),
            Some(field) => {
                let j: Json = serde_json::from_str(&raw).map_err(|e| self.fail(format!("the subject token source is not JSON: {e}")))?;
                j[field.as_str()].as_str().ok_or_else(|| self.fail(format!("the subject token source has no string field {field:?}")))?.to_string()
            }
        };
        if token.is_empty() {
            return Err(self.fail("the subject token is empty"));
        }
        Ok(token)
    }

    /// Exchanges the subject token at STS: (access token, lifetime).
    async fn exchange(&self, subject: &str) -> Result<(String, Duration), ProviderError> {
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("audience", self.config.audience.as_str()),
            ("scope", CLOUD_PLATFORM_SCOPE),
            ("requested_token_type", "urn:ietf:params:oauth:token-type:access_token"),
            ("subject_token", subject),
            ("subject_token_type", self.config.subject_token_type.as_str()),
        ];
        let body = form.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect::<Vec<_>>().join("&");
        let resp = self
            .http
            .post(&self.config.token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| self.fail(format!("calling the Security Token Service at {}: {e}", self.config.token_url)))?;
        let status = resp.status();
        let j: Json = resp.json().await.unwrap_or_default();
        if !status.is_success() {
            let code = j["error"].as_str().unwrap_or("error");
            let desc = j["error_description"].as_str().unwrap_or_default();
            return Err(self.fail(format!("the Security Token Service refused the token: HTTP {status} {code}: {desc}")));
        }
        let token = j["access_token"].as_str().ok_or_else(|| self.fail("the Security Token Service answered without access_token"))?;
        Ok((token.to_string(), Duration::from_secs(j["expires_in"].as_u64().unwrap_or(3600))))
    }

    /// Impersonates the service account with the federated token: (access token, lifetime).
    async fn impersonate(&self, url: &str, federated: &str) -> Result<(String, Duration), ProviderError> {
        let resp = self
            .http
            .post(url)
            .bearer_auth(federated)
            .json(&json!({"scope": [CLOUD_PLATFORM_SCOPE], "lifetime": "3600s"}))
            .send()
            .await
            .map_err(|e| self.fail(format!("calling generateAccessToken: {e}")))?;
        let status = resp.status();
        let j: Json = resp.json().await.unwrap_or_default();
        if !status.is_success() {
            let msg = j["error"]["message"].as_str().unwrap_or_default();
            let hint = if status.as_u16() == 403 { " (grant the pool's principal roles/iam.workloadIdentityUser on the service account)" } else { "" };
            return Err(self.fail(format!("impersonating the service account was refused: HTTP {status}: {msg}{hint}")));
        }
        let token = j["accessToken"].as_str().ok_or_else(|| self.fail("generateAccessToken answered without accessToken"))?;
        let lifetime = j["expireTime"]
            .as_str()
            .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
            .and_then(|t| {
                let secs = t.unix_timestamp() - SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs() as i64;
                u64::try_from(secs).ok().map(Duration::from_secs)
            })
            .unwrap_or(Duration::from_secs(3600));
        Ok((token.to_string(), lifetime))
    }
}

fn strip_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

#[async_trait]
impl AccessTokens for ExternalAccountTokens {
    async fn access_token(&self) -> Result<String, ProviderError> {
        let mut cache = self.cache.lock().await;
        if let Some((t, until)) = cache.as_ref()
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let subject = self.subject_token().await?;
        let (mut token, mut lifetime) = self.exchange(&subject).await?;
        if let Some(url) = &self.config.impersonation_url {
            (token, lifetime) = self.impersonate(url, &token).await?;
        }
        *cache = Some((token.clone(), Instant::now() + lifetime.saturating_sub(Duration::from_secs(300))));
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_parse_or_say_what_is_wrong() {
        let github = json!({
            "type": "external_account",
            "audience": "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/ci/providers/github",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": "https://sts.googleapis.com/v1/token",
            "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/deploy@p.iam.gserviceaccount.com:generateAccessToken",
            "credential_source": {"url": "https://token.actions.example/?audience=x", "headers": {"Authorization": "Bearer abc"}, "format": {"type": "json", "subject_token_field_name": "value"}}
        });
        let c = ExternalAccount::from_json(&github, "creds.json").unwrap();
        assert_eq!(c.json_field.as_deref(), Some("value"));
        assert_eq!(
            c.source,
            Source::Url { url: "https://token.actions.example/?audience=x".into(), headers: vec![("Authorization".into(), "Bearer abc".into())] }
        );
        assert!(c.impersonation_url.is_some());

        let mut file = github.clone();
        file["credential_source"] = json!({"file": "/var/run/token"});
        file.as_object_mut().unwrap().remove("token_url");
        let c = ExternalAccount::from_json(&file, "creds.json").unwrap();
        assert_eq!(c.source, Source::File("/var/run/token".into()));
        assert_eq!(c.json_field, None);
        assert_eq!(c.token_url, "https://sts.googleapis.com/v1/token");

        let mut aws = github.clone();
        aws["credential_source"] = json!({"environment_id": "aws1", "region_url": "http://169.254.169.254"});
        let e = ExternalAccount::from_json(&aws, "creds.json").unwrap_err();
        assert!(e.message.starts_with("creds.json: AWS-sourced") && e.message.contains("GOOGLE_OAUTH_ACCESS_TOKEN"), "{}", e.message);
        let mut none = github.clone();
        none["credential_source"] = json!({});
        assert!(ExternalAccount::from_json(&none, "c").unwrap_err().message.contains("neither file nor url"));
        let mut no_audience = github;
        no_audience.as_object_mut().unwrap().remove("audience");
        assert!(ExternalAccount::from_json(&no_audience, "c").unwrap_err().message.contains("no audience"));
    }
}

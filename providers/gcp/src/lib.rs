//! The kdeploy GCP provider: `cluster { type = "gke" }` and `object_storage { type = "gcs" }`,
//! through the documented REST APIs (no SDK, no gcloud).
//!
//! * **GKE** (container.googleapis.com/v1): the cluster with one node pool (`default`) of
//!   `machine_type`, `node_count` nodes (per zone) and autoscaling between `min_nodes` and
//!   `max_nodes` when both are set. Every change waits for its long-running operation
//!   (`operations.get` until DONE; its `error` fails the apply). `node_count` (setSize),
//!   `min_nodes`/`max_nodes` (setAutoscaling) and `version` (clusters.update, then
//!   nodePools.update) change in place; `project`, `location`, `name` and `machine_type`
//!   replace the cluster (see [`plan::GKE_REPLACE`]).
//! * **Kubernetes access**: the cluster's attributes carry `endpoint` (https://…),
//!   `certificate_authority` (masterAuth.clusterCaCertificate, base64) and
//!   `token_source = "gke"`; [`GkeTokenSource`] gives the Kubernetes provider an OAuth access
//!   token from the same credentials (GKE accepts them as bearer tokens).
//! * **GCS** (storage.googleapis.com/storage/v1): the bucket with a lifecycle Delete rule at
//!   age `retention_days`, a service account granted roles/storage.objectAdmin on that bucket
//!   only, and its HMAC key (`access_key` = access id, sensitive `secret_key`) for Vault.
//! * **Retries**: [`http::RetryPolicy`] — at most 3 attempts, only for 429 and 503 (honouring
//!   `Retry-After`), connect timeout 10 s, 60 s per request. 401/403 are reported as
//!   [`ErrorKind::Unauthorized`] with what to check.
//! * **Credentials**: any [`auth::AccessTokens`]. [`GcpProvider::from_env`] uses
//!   [`auth::DefaultTokens`]: GOOGLE_OAUTH_ACCESS_TOKEN when set, else application default
//!   credentials through `gcp_auth` (feature `adc`, on by default): GOOGLE_APPLICATION_CREDENTIALS,
//!   gcloud's ADC file, or the metadata server (workload identity); `external_account` files
//!   (workload identity federation, e.g. from CI) through [`external`]. The process must have a
//!   rustls crypto provider installed when both ring and aws-lc-rs are linked (kdeploy's main
//!   does).
//!
//! Base URLs are configurable ([`Config`], [`Config::from_env`]) so that tests talk to a local
//! mock server.

pub mod auth;
pub mod external;
pub mod gcs;
pub mod gke;
pub mod http;
pub mod plan;
pub mod util;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kdeploy_provider::{
    ApplyRequest, ApplyResponse, ComponentRef, DeleteRequest, ErrorKind, Kind, PlanRequest, PlanResponse, Preflight, Provider, ProviderError, ReadRequest,
    ReadResult, TokenSource, Value,
};

pub use auth::{AccessTokens, EnvToken, StaticToken};
pub use http::RetryPolicy;

use crate::http::Api;
use crate::util::attrs;

/// API locations and timing.
#[derive(Debug, Clone)]
pub struct Config {
    /// `https://container.googleapis.com` (the `/v1/...` paths are appended).
    pub container_url: String,
    /// `https://storage.googleapis.com` (the `/storage/v1/...` paths are appended).
    pub storage_url: String,
    /// `https://iam.googleapis.com` (the `/v1/...` paths are appended).
    pub iam_url: String,
    /// Between two `operations.get` calls.
    pub poll_interval: Duration,
    /// How long one GKE operation may take (cluster creation takes 5 to 15 minutes).
    pub operation_timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            container_url: "https://container.googleapis.com".into(),
            storage_url: "https://storage.googleapis.com".into(),
            iam_url: "https://iam.googleapis.com".into(),
            poll_interval: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(40 * 60),
            retry: RetryPolicy::default(),
        }
    }
}

impl Config {
    /// The defaults, with the API locations and the operation poll interval taken from the
    /// environment where set:
    ///
    /// * `KDEPLOY_GCP_CONTAINER_URL`, `KDEPLOY_GCP_STORAGE_URL`, `KDEPLOY_GCP_IAM_URL`: another
    ///   base URL for one API (Private Service Connect endpoints, a proxy, a test double);
    /// * `KDEPLOY_GCP_POLL_INTERVAL`: seconds between two GKE `operations.get` calls (default 10).
    pub fn from_env() -> Result<Config, ProviderError> {
        Config::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    }

    fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Config, ProviderError> {
        let mut c = Config::default();
        for (key, field) in
            [("KDEPLOY_GCP_CONTAINER_URL", &mut c.container_url), ("KDEPLOY_GCP_STORAGE_URL", &mut c.storage_url), ("KDEPLOY_GCP_IAM_URL", &mut c.iam_url)]
        {
            if let Some(v) = var(key) {
                let v = v.trim().trim_end_matches('/');
                if !(v.starts_with("https://") || v.starts_with("http://")) {
                    return Err(ProviderError::new(
                        ErrorKind::Invalid,
                        format!("{key}={v:?} is not a URL: give a base such as https://container.googleapis.com"),
                    ));
                }
                *field = v.to_string();
            }
        }
        if let Some(v) = var("KDEPLOY_GCP_POLL_INTERVAL") {
            let secs: f64 = v
                .trim()
                .trim_end_matches('s')
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| ProviderError::new(ErrorKind::Invalid, format!("KDEPLOY_GCP_POLL_INTERVAL={v:?} is not a number of seconds (e.g. 10)")))?;
            c.poll_interval = Duration::from_secs_f64(secs);
        }
        Ok(c)
    }

    /// All three APIs at one base URL (a mock server).
    pub fn with_base_url(base: &str) -> Config {
        let base = base.trim_end_matches('/').to_string();
        Config { container_url: base.clone(), storage_url: base.clone(), iam_url: base, ..Config::default() }
    }
}

/// What the provider's parts share: the configuration and the authenticated client.
pub struct Shared {
    pub config: Config,
    pub api: Api,
}

/// The GCP provider.
pub struct GcpProvider {
    shared: Arc<Shared>,
    tokens: Arc<dyn AccessTokens>,
}

impl GcpProvider {
    pub fn new(tokens: Arc<dyn AccessTokens>, config: Config) -> Result<GcpProvider, ProviderError> {
        let api = Api::new(tokens.clone(), config.retry.clone())?;
        Ok(GcpProvider { shared: Arc::new(Shared { config, api }), tokens })
    }

    /// The provider for real runs: Google's API endpoints and [`auth::DefaultTokens`]
    /// (GOOGLE_OAUTH_ACCESS_TOKEN, else application default credentials).
    #[cfg(feature = "adc")]
    pub fn from_env() -> Result<GcpProvider, ProviderError> {
        GcpProvider::new(Arc::new(auth::DefaultTokens::default()), Config::from_env()?)
    }

    /// The "gke" token source for the Kubernetes provider, sharing this provider's credentials.
    pub fn token_source(&self) -> Arc<dyn TokenSource> {
        Arc::new(GkeTokenSource { tokens: self.tokens.clone() })
    }
}

/// Bearer tokens for GKE API servers: the OAuth access token of the provider's credentials.
pub struct GkeTokenSource {
    pub tokens: Arc<dyn AccessTokens>,
}

#[async_trait]
impl TokenSource for GkeTokenSource {
    async fn token(&self, _cluster: &Value) -> Result<String, ProviderError> {
        self.tokens.access_token().await
    }
}

fn unsupported(c: &ComponentRef) -> ProviderError {
    ProviderError::new(
        ErrorKind::Invalid,
        format!("{}: the gcp provider serves cluster type \"gke\" and object_storage type \"gcs\", not {} type {:?}", c.address, c.kind, c.type_name),
    )
}

fn is_gke(c: &ComponentRef) -> bool {
    c.kind == Kind::Cluster && c.type_name == "gke"
}

fn is_gcs(c: &ComponentRef) -> bool {
    c.kind == Kind::ObjectStorage && c.type_name == "gcs"
}

#[async_trait]
impl Provider for GcpProvider {
    fn name(&self) -> &str {
        "gcp"
    }

    /// Checks that credentials yield a token before anything is planned.
    async fn preflight(&self, clusters: &[(ComponentRef, Value)]) -> Preflight {
        let mut out = Preflight::default();
        if clusters.iter().any(|(c, _)| is_gke(c))
            && let Err(e) = self.tokens.access_token().await
        {
            out.errors.push(e.message);
        }
        out
    }

    async fn read(&self, requests: Vec<ReadRequest>) -> Result<Vec<ReadResult>, ProviderError> {
        let mut results = Vec::with_capacity(requests.len());
        for r in &requests {
            let recorded = attrs(Some(&r.recorded));
            let found = if is_gke(&r.component) {
                gke::read(&self.shared, &r.component.address.to_string(), &recorded).await?
            } else if is_gcs(&r.component) {
                // A create that never got recorded has no bucket name to look for: apply again.
                if util::s(&recorded, "bucket").is_none() { None } else { gcs::read(&self.shared, &r.component.address.to_string(), &recorded).await? }
            } else {
                return Err(unsupported(&r.component));
            };
            results.push(match found {
                Some(a) => ReadResult::Found { attributes: Value::Map(a), fingerprint: None },
                None => ReadResult::Missing,
            });
        }
        Ok(results)
    }

    async fn plan(&self, req: PlanRequest<'_>) -> Result<PlanResponse, ProviderError> {
        let c = &req.component;
        if is_gke(c) {
            plan::plan_gke(&c.address.to_string(), req.desired, req.prior)
        } else if is_gcs(c) {
            plan::plan_gcs(&c.address.to_string(), req.desired, req.prior)
        } else {
            Err(unsupported(c))
        }
    }

    async fn apply(&self, req: ApplyRequest) -> Result<ApplyResponse, ProviderError> {
        let c = &req.component;
        let planned = attrs(Some(&req.planned));
        let prior = req.prior.as_ref().map(|p| attrs(Some(p)));
        let attributes = if is_gke(c) {
            gke::apply(&self.shared, &c.address.to_string(), &planned, prior.as_ref()).await?
        } else if is_gcs(c) {
            gcs::apply(&self.shared, &c.address.to_string(), &planned).await?
        } else {
            return Err(unsupported(c));
        };
        Ok(ApplyResponse::ready(Value::Map(attributes), None))
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), ProviderError> {
        let c = &req.component;
        let prior = attrs(Some(&req.prior));
        if is_gke(c) {
            gke::delete(&self.shared, &c.address.to_string(), &prior).await
        } else if is_gcs(c) {
            gcs::delete(&self.shared, &c.address.to_string(), &prior, req.delete_data).await
        } else {
            Err(unsupported(c))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn config_overrides_come_from_the_environment() {
        let c = Config::from_lookup(lookup(&[])).unwrap();
        assert_eq!(c.container_url, "https://container.googleapis.com");
        assert_eq!(c.poll_interval, Duration::from_secs(10));
        let c = Config::from_lookup(lookup(&[("KDEPLOY_GCP_CONTAINER_URL", "http://127.0.0.1:9/"), ("KDEPLOY_GCP_POLL_INTERVAL", "0.5")])).unwrap();
        assert_eq!(c.container_url, "http://127.0.0.1:9");
        assert_eq!(c.storage_url, "https://storage.googleapis.com", "the others keep their defaults");
        assert_eq!(c.poll_interval, Duration::from_millis(500));
        let e = Config::from_lookup(lookup(&[("KDEPLOY_GCP_POLL_INTERVAL", "soon")])).unwrap_err();
        assert!(e.message.contains("KDEPLOY_GCP_POLL_INTERVAL") && e.message.contains("seconds"), "{}", e.message);
        let e = Config::from_lookup(lookup(&[("KDEPLOY_GCP_IAM_URL", "iam.example.com")])).unwrap_err();
        assert!(e.message.contains("KDEPLOY_GCP_IAM_URL"), "{}", e.message);
    }
}

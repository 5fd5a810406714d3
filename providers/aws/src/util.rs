//! Small helpers: attribute access on [`Value`] maps, SDK error mapping, waiting.

use std::collections::BTreeMap;
use std::fmt::{Debug, Display};
use std::future::Future;
use std::time::{Duration, Instant};

use aws_sdk_eks::error::{ProvideErrorMetadata, SdkError};
use kdeploy_provider::{ErrorKind, ProviderError, Value, error_chain};

pub use kdeploy_provider::attrs::{Attrs, attrs, b, list, n, s, tag_map};

/// Tags kdeploy puts on everything it creates, next to the user's.
pub const TAG_MANAGED_BY: &str = "kdeploy:managed-by";
pub const TAG_COMPONENT: &str = "kdeploy:component";

/// The user's tags as found live: kdeploy's own tags (`kdeploy:*`) left out; null when the
/// stack set none and none are there, so an unset `tags` reads back as unset.
pub fn live_tags(live: impl IntoIterator<Item = (String, String)>, recorded: Option<&Value>) -> Value {
    let user: BTreeMap<String, Value> = live.into_iter().filter(|(k, _)| !k.starts_with("kdeploy:")).map(|(k, v)| (k, Value::String(v))).collect();
    if user.is_empty() && recorded.is_none_or(Value::is_null) { Value::Null } else { Value::Map(user) }
}

/// Maps an SDK failure to a provider error that says what failed and what to do.
pub fn sdk_err<E, R>(what: impl Display, e: SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: Debug + Send + Sync + 'static,
{
    let code = e.code().map(str::to_string);
    let kind = match &e {
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => ErrorKind::Unreachable,
        SdkError::TimeoutError(_) => ErrorKind::Unreachable,
        _ => code_kind(code.as_deref()),
    };
    let detail = error_chain(&e);
    let hint = match kind {
        ErrorKind::Unauthorized => {
            ". Check the AWS credentials (AWS_PROFILE, `aws sso login`, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_WEB_IDENTITY_TOKEN_FILE) and that their IAM policy allows this call"
        }
        ErrorKind::Unreachable => ". Check the network and AWS_ENDPOINT_URL (if set)",
        _ => "",
    };
    ProviderError::new(kind, format!("{what}: {detail}{hint}"))
}

pub fn code_kind(code: Option<&str>) -> ErrorKind {
    match code {
        Some(
            "ExpiredToken"
            | "ExpiredTokenException"
            | "InvalidClientTokenId"
            | "UnrecognizedClientException"
            | "AccessDenied"
            | "AccessDeniedException"
            | "SignatureDoesNotMatch"
            | "InvalidAccessKeyId"
            | "UnauthorizedOperation"
            | "AuthFailure"
            | "MissingAuthenticationToken",
        ) => ErrorKind::Unauthorized,
        Some(
            "InvalidParameterException"
            | "InvalidParameterValue"
            | "ValidationError"
            | "InvalidRequestException"
            | "MalformedPolicyDocument"
            | "InvalidBucketName",
        ) => ErrorKind::Invalid,
        Some(
            "ResourceInUseException"
            | "EntityAlreadyExists"
            | "BucketAlreadyExists"
            | "DependencyViolation"
            | "DeleteConflict"
            | "ResourceLimitExceeded"
            | "LimitExceeded",
        ) => ErrorKind::Conflict,
        _ => ErrorKind::Other,
    }
}

/// Whether an SDK failure is the service's "not found" for the thing asked about.
pub fn is_code<E, R>(e: &SdkError<E, R>, codes: &[&str]) -> bool
where
    E: ProvideErrorMetadata,
{
    e.code().is_some_and(|c| codes.contains(&c))
}

/// Polls `check` until it yields a value, backing off from 1 s to 15 s, or fails after
/// `timeout` with `what` in the message.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, ProviderError>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(500);
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            return Err(ProviderError::new(ErrorKind::Timeout, format!("{what}: still not done after {}s", timeout.as_secs())));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(15));
    }
}

/// A name fit for AWS from a component address: `cluster.cloud` → `cloud`,
/// `module.site.cluster.c["a"]` → `site-c-a`.
pub fn name_from_address(address: &str) -> String {
    kdeploy_provider::names::from_address(address)
}

/// The ARN partition of a region.
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// Percent-encoding of a query component (RFC 3986 unreserved characters kept).
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for byte in s.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// `host[:port]` of a URL.
pub fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.split(['/', '?']).next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_addresses() {
        assert_eq!(name_from_address("cluster.cloud"), "cloud");
        assert_eq!(name_from_address("module.site.cluster.c[\"Front Door\"]"), "site-c-front-door");
        assert_eq!(name_from_address("cluster.x_y"), "x-y");
    }

    #[test]
    fn user_tags_leave_kdeploy_tags_out() {
        let live = vec![("kdeploy:managed-by".to_string(), "kdeploy".to_string()), ("team".to_string(), "video".to_string())];
        assert_eq!(live_tags(live, None), Value::Map([("team".to_string(), Value::string("video"))].into()));
        assert_eq!(live_tags(vec![("kdeploy:component".into(), "x".into())], None), Value::Null);
        assert_eq!(live_tags(vec![], Some(&Value::Map(Default::default()))), Value::Map(Default::default()));
    }

    #[test]
    fn partitions_and_hosts() {
        assert_eq!(partition("eu-west-1"), "aws");
        assert_eq!(partition("cn-north-1"), "aws-cn");
        assert_eq!(url_host("http://127.0.0.1:5000/"), "127.0.0.1:5000");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}

//! Every environment variable kdeploy reads, in one documented place. README's table of
//! environment variables is checked against this list by a test, and every entry is read by the
//! real binary in a test of its own (tests/it/env_vars.rs).

use std::collections::BTreeMap;

/// Who reads a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// The engine, from [`engine_vars`] (never from the process environment directly, so tests
    /// can run it in-process).
    Engine,
    /// A provider or a state backend, from the process environment (its client library reads
    /// it: the AWS SDK, azure_identity, gcp_auth, kube, bollard).
    Library,
}

/// One variable (or a family of them: `name` ends with `*` for a prefix).
#[derive(Debug, Clone, Copy)]
pub struct EnvVar {
    pub name: &'static str,
    pub reader: Reader,
    pub meaning: &'static str,
}

const fn var(name: &'static str, reader: Reader, meaning: &'static str) -> EnvVar {
    EnvVar { name, reader, meaning }
}

use Reader::{Engine, Library};

/// The variables users set. (Test-only hooks are not listed here.)
pub const VARS: &[EnvVar] = &[
    var("KDEPLOY_VAR_*", Engine, "value of root variable <name>"),
    var("NO_COLOR", Engine, "no colour in any output"),
    var("KDEPLOY_STATE_KEY", Engine, "key that encrypts sensitive values in state"),
    var("KDEPLOY_STATE_KEY_FILE", Engine, "a file holding the state key"),
    var("KUBECONFIG", Library, "kubeconfig used by Kubernetes clusters without a kubeconfig attribute"),
    var("KDEPLOY_HELM", Library, "the helm binary chart components are rendered with, when not on PATH"),
    var("DOCKER_HOST", Library, "Docker engine used by Docker clusters without a host attribute"),
    var("DOCKER_TLS_VERIFY", Library, "verify the Docker engine's TLS certificate"),
    var("DOCKER_CERT_PATH", Library, "directory with the Docker engine's TLS files"),
    var("AWS_*", Library, "the standard AWS SDK chain (credentials, profile, region, AWS_ENDPOINT_URL)"),
    var("AZURE_SUBSCRIPTION_ID", Library, "the subscription Azure components are created in"),
    var("AZURE_ACCESS_TOKEN", Library, "an Azure access token"),
    var("AZURE_TENANT_ID", Library, "service principal or workload identity tenant"),
    var("AZURE_CLIENT_ID", Library, "service principal, workload or user-assigned managed identity"),
    var("AZURE_CLIENT_SECRET", Library, "service principal secret"),
    var("AZURE_FEDERATED_TOKEN_FILE", Library, "workload identity token file"),
    var("AZURE_USE_MANAGED_IDENTITY", Library, "use the managed identity"),
    var("AZURE_AUTHORITY_HOST", Library, "sign-in host of another Azure cloud"),
    var("AZURE_RESOURCE_MANAGER_ENDPOINT", Library, "ARM endpoint of another Azure cloud"),
    var("GOOGLE_OAUTH_ACCESS_TOKEN", Library, "a Google access token"),
    var("GOOGLE_APPLICATION_CREDENTIALS", Library, "Google application default credentials file"),
    var("KDEPLOY_GCP_CONTAINER_URL", Library, "base URL of the GKE API"),
    var("KDEPLOY_GCP_STORAGE_URL", Library, "base URL of the Cloud Storage API"),
    var("KDEPLOY_GCP_IAM_URL", Library, "base URL of the IAM API"),
    var("KDEPLOY_GCP_POLL_INTERVAL", Library, "seconds between two polls of a GKE operation"),
];

/// Whether `key` is one of the variables the engine reads.
pub fn engine_reads(key: &str) -> bool {
    VARS.iter().filter(|v| v.reader == Engine).any(|v| match v.name.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix) && key.len() > prefix.len(),
        None => key == v.name,
    })
}

/// The part of an environment the engine reads.
pub fn engine_vars(all: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
    all.into_iter().filter(|(k, _)| engine_reads(k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_gets_its_variables_and_no_others() {
        let env = [
            ("KDEPLOY_VAR_region", "x"),
            ("KDEPLOY_VAR_", "empty name"),
            ("KDEPLOY_STATE_KEY", "k"),
            ("KDEPLOY_STATE_KEY_FILE", "f"),
            ("NO_COLOR", "1"),
            ("AWS_REGION", "eu"),
            ("HOME", "/root"),
        ];
        let got = engine_vars(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        assert_eq!(got.keys().map(String::as_str).collect::<Vec<_>>(), ["KDEPLOY_STATE_KEY", "KDEPLOY_STATE_KEY_FILE", "KDEPLOY_VAR_region", "NO_COLOR"]);
    }
}

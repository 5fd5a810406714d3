//! Local stand-ins for the cloud APIs that have no emulator, shared by the provider crates' tests
//! and the CLI tests in tests/it:
//!
//! * [`azure`]: Azure Resource Manager (resource groups, AKS managed clusters, storage accounts,
//!   blob containers, management policies) with its long-running-operation protocol;
//! * [`gcp`]: the GKE, Cloud Storage and IAM REST APIs with GKE operations and an OAuth token
//!   endpoint.
//!
//! Both answer with the documented request/response shapes kept in `fixtures/` (taken from the
//! public API references), keep their resources in memory, log every request, and can be told to
//! fail (404, 409, 429 with Retry-After, 401, 403) so that tests can check retries and errors.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

pub mod azure;
pub mod gcp;

/// The directory holding `azure/` and `gcp/` fixtures.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");

#[cfg(test)]
mod tests {
    #[test]
    fn fixtures_are_valid_json() {
        let mut seen = 0;
        for cloud in ["azure", "gcp"] {
            for f in std::fs::read_dir(format!("{}/{cloud}", super::FIXTURES)).unwrap() {
                let path = f.unwrap().path();
                if path.extension().is_some_and(|e| e == "json") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    seen += 1;
                }
            }
        }
        assert!(seen > 20, "expected the Azure and GCP fixtures, found {seen}");
    }
}

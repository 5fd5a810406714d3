//! The provider contract, the shared value model and the component schemas.
//!
//! Both the engine (`kdeploy`) and every provider crate depend on this small crate, so the
//! engine never depends on a provider and a provider never depends on the engine.
pub mod addr;
pub mod attrs;
pub mod components;
pub mod duration;
pub mod images;
pub mod names;
pub mod provider;
pub mod schema;
pub mod value;

#[cfg(feature = "testing")]
pub mod fake;

/// TEST ONLY: the API server endpoint that replaces the one a cloud reports for a managed
/// cluster (`KDEPLOY_TEST_EKS_ENDPOINT`, ...), so that the in-cluster phase runs against a local
/// test API server while the cloud calls go to a double. Always `None` in builds without the
/// `test-hooks` feature, which only the workspace's dev-dependencies enable.
pub fn test_endpoint(variable: &str) -> Option<String> {
    #[cfg(feature = "test-hooks")]
    {
        std::env::var(variable).ok().filter(|v| !v.is_empty())
    }
    #[cfg(not(feature = "test-hooks"))]
    {
        let _ = variable;
        None
    }
}

pub use duration::Duration;
pub use provider::{
    ADOPTED, ApplyRequest, ApplyResponse, Check, ComponentRef, DataRequest, DataResult, DeleteRequest, EnvSource, ErrorKind, ExternalProvider, ImportRequest,
    Imported, PlanRequest, PlanResponse, Preflight, Provider, ProviderError, ReadRequest, ReadResult, Reference, Running, TokenSource, UnavailableProvider,
    Wait, WaitRequest, default_plan, error_chain,
};
pub use schema::{AttrSchema, AttrType, ComponentSchema, Kind, provider_for, schema, schema_ref};
pub use value::{AttrPath, PathStep, Value};

//! The provider contract, the shared value model and the component schemas.
//!
//! Both the engine (`kdeploy`) and every provider crate depend on this small crate, so the
//! engine never depends on a provider and a provider never depends on the engine.
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

pub use duration::Duration;
pub use provider::{
    ApplyRequest, ApplyResponse, Check, ComponentRef, DeleteRequest, ErrorKind, ExternalProvider, PlanRequest, PlanResponse, Preflight, Provider,
    ProviderError, ReadRequest, ReadResult, Reference, TokenSource, UnavailableProvider, default_plan, error_chain,
};
pub use schema::{AttrSchema, AttrType, ComponentSchema, Kind, provider_for, schema, schema_ref};
pub use value::{AttrPath, PathStep, Value};

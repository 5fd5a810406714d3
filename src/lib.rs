//! kdeploy: declarative provisioning for the Kerberos.io video-surveillance stack.
/// Addresses live in the provider API crate, below the state model and the engine.
pub use kdeploy_provider::addr;
pub mod adopt;
pub mod apply;
pub mod build_info;
pub mod cli;
pub mod config;
pub mod diag;
pub mod drift;
pub mod engine;
pub mod env;
pub mod files;
pub mod graph;
pub mod partition;
pub mod plan;
pub mod providers;

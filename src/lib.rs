//! kdeploy: declarative provisioning for the Kerberos.io video-surveillance stack.
pub mod addr;
pub mod config;
pub mod diag;
pub mod drift;
pub mod graph;
pub mod plan;
pub mod providers;
pub mod apply;
pub mod engine;
pub mod env;
pub mod files;
pub mod cli;
pub mod build_info;

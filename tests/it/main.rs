//! The one integration test binary (see tests/it/*.rs).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod cli;
mod docker;
mod drift;
mod engine;
mod language;
mod lock;
mod mqtt;
mod support;

mod adopt;
mod aws;
mod azure;
mod chart;
mod components;
mod crash;
mod data_sources;
mod dist;
mod fuzz;
mod gcp;
mod hub;
mod import;
mod kubernetes;
mod partition;
mod recording;
mod reliability;
mod state_backends;

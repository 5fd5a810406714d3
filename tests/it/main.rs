//! The one integration test binary (see tests/it/*.rs).

mod support;
mod cli;
mod drift;
mod engine;
mod lock;
mod language;
mod docker;

mod kubernetes;
mod aws;
mod azure;
mod gcp;
mod state_backends;
mod recording;
mod components;
mod reliability;
mod crash;
mod fuzz;
mod dist;

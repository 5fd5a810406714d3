//! Test stand-ins for what kdeploy deploys, since no image can be pulled on our machines:
//!
//! - [`vault`]: a Kerberos Vault as strict as `shared/docs/vault-config.md` says it is;
//! - [`s3`]: a MinIO that records the buckets created in it;
//! - [`rabbitmq`]: RabbitMQ's management API, recording declared queues;
//! - [`clients`]: the `mc` and `rabbitmqadmin` commands kdeploy's one-shot steps run.
//!
//! The `kdeploy-standin` binary runs them in the Docker test image (a multi-call binary: as `mc`
//! or `rabbitmqadmin` it is that client); the Kubernetes tests run them in-process behind the
//! test API server's service proxy.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

pub mod clients;
pub mod http;
pub mod rabbitmq;
pub mod s3;
pub mod vault;

use std::collections::BTreeMap;
use std::sync::Arc;

/// Starts a Vault on `addr` whose environment is read again for every request (as if Vault
/// restarted with the latest configuration): while `env` fails, or its variables are invalid,
/// the Vault is not running (503 with the reason). `release` says which Vault it plays (one
/// that predates the variables starts but knows no account).
pub fn spawn_vault(
    addr: &str,
    env: Arc<dyn Fn() -> Result<BTreeMap<String, String>, String> + Send + Sync>,
    release: vault::Release,
) -> std::io::Result<std::net::SocketAddr> {
    http::spawn(
        addr,
        Arc::new(move |req| {
            let config = env().and_then(|e| vault::load_for(&e, &release));
            match config {
                Ok(c) => vault::respond(&c, req),
                Err(e) => http::Response::text(503, &format!("vault is not running: {e}")),
            }
        }),
    )
}

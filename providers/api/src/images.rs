//! Every container image kdeploy deploys, pinned in one place (never `latest`). Each component
//! can override its image with the `image` attribute.

/// Kerberos Vault (the uug-ai registry, where the project moved).
pub const VAULT: &str = "ghcr.io/uug-ai/vault:v1.4.9";
/// Kerberos Agent. v3.6.29 or later reads the `GLOBAL_AGENT_*` settings Factory v2 hands to the
/// agents it creates, so the same pin serves kdeploy's agents and Factory's.
pub const AGENT: &str = "kerberos/agent:v3.11.1";
/// Kerberos Factory (v2: ConfigMap-backed, no MongoDB).
pub const FACTORY: &str = "ghcr.io/uug-ai/factory:v2.0.4";
/// MongoDB (official image; Vault supports 4.x-8.x).
pub const MONGODB: &str = "mongo:8.0.13";
/// MinIO server.
pub const MINIO: &str = "quay.io/minio/minio:RELEASE.2024-11-07T00-52-20Z";
/// MinIO client, used once to create the recordings bucket.
pub const MINIO_CLIENT: &str = "quay.io/minio/mc:RELEASE.2024-11-17T19-35-25Z";
/// RabbitMQ with the management plugin (and rabbitmqadmin).
pub const RABBITMQ: &str = "rabbitmq:3.13.7-management";
/// Apache Kafka (`broker` type `kafka`), a single KRaft node.
pub const KAFKA: &str = "apache/kafka:3.9.1";
/// Mosquitto, the MQTT broker agents and Hub's live view use (`broker` type `mosquitto`).
pub const MOSQUITTO: &str = "eclipse-mosquitto:2.0.21";
/// VerneMQ (`broker` type `vernemq`), the MQTT broker of the upstream Hub manifests.
pub const VERNEMQ: &str = "vernemq/vernemq:2.0.1-alpine";
/// coturn, the TURN server of the WebRTC live view (`turn` type `coturn`).
pub const COTURN: &str = "coturn/coturn:4.6.3";
/// Small utility image for init containers (waiting for a TCP port, seeding files).
pub const BUSYBOX: &str = "busybox:1.36.1";

/// Where kdeploy's own image is published: the release workflow
/// (`.github/workflows/release.yml`) pushes `<this>:<version>` for every release tag. The one
/// place to change for a fork (a test checks that the workflow pushes here).
pub const KDEPLOY_REPOSITORY: &str = "ghcr.io/kerberos-io/kdeploy";

/// kdeploy's release image of this version, the default image of `drift_schedule`, so the
/// in-cluster job runs the kdeploy that deployed it. Every crate of the workspace shares the
/// workspace's version, so this crate's version is the running kdeploy's.
pub fn kdeploy() -> String {
    format!("{KDEPLOY_REPOSITORY}:{}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_image_floats() {
        for image in [
            super::VAULT,
            super::AGENT,
            super::FACTORY,
            super::MONGODB,
            super::MINIO,
            super::MINIO_CLIENT,
            super::RABBITMQ,
            super::MOSQUITTO,
            super::KAFKA,
            super::VERNEMQ,
            super::COTURN,
            super::BUSYBOX,
            super::kdeploy().as_str(),
        ] {
            let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
            assert!(!tag.is_empty() && tag != "latest" && !tag.contains('/'), "{image} is not pinned");
        }
    }
}

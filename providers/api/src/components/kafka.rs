//! Kafka (`broker` type `kafka`): one Apache Kafka node in KRaft mode (broker and controller in
//! one process, no ZooKeeper) with one SASL PLAIN user, the queue Vault's `kafka` integration
//! publishes to (`shared/docs/vault-config.md` §1).
//!
//! The apache/kafka image is configured by its environment: `KAFKA_` followed by the property
//! with `.` as `_` and `_` as `__` (`listener.name.sasl.plain.sasl.jaas.config` is
//! `KAFKA_LISTENER_NAME_SASL_PLAIN_SASL_JAAS_CONFIG`).

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::{Controller, Get, Mount, Port, Probe, Security, Workload, WorkloadError, base, plain, secret, versioned};
use crate::images;
use crate::provider::ComponentRef;

/// Clients (Vault) connect here, with SASL PLAIN over plaintext (listener `SASL`).
pub const PORT: u16 = 9092;
/// The KRaft controller listener, inside the pod only.
const CONTROLLER_PORT: u16 = 9093;
/// The image's user (appuser) is in this group: the data volume is made writable to it.
const FS_GROUP: i64 = 1000;

/// The cluster id KRaft formats its storage with: 16 bytes as 22 characters of URL-safe
/// base64, derived from the address so that it is the same at every apply.
pub fn cluster_id(component: &ComponentRef) -> String {
    let digest = Sha256::digest(format!("kdeploy kafka\0{}", component.address).as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// The JAAS line of the SASL listener: the broker's own login (for its inter-broker
/// connections) and the one user it accepts.
fn jaas(user: &str, password: &str) -> String {
    format!("org.apache.kafka.common.security.plain.PlainLoginModule required username=\"{user}\" password=\"{password}\" user_{user}=\"{password}\";")
}

/// The Kafka node. The user and password are written into a JAAS line: the user is limited to
/// letters, digits, `.`, `_` and `-`, and neither may contain quotes or backslashes.
pub(super) fn kafka(a: &Get<'_>, component: &ComponentRef) -> Result<Workload, WorkloadError> {
    let mut w = base("kafka", versioned(a, "apache/kafka", images::KAFKA));
    let (host, user, password) = (a.s("host"), a.s("username"), a.s("admin_password"));
    if !user.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) || password.contains(['"', '\\']) {
        return Err(WorkloadError::Invalid(format!(
            "{}: the Kafka user may contain only letters, digits, '.', '_' and '-', and the password no quotes or backslashes (they are written into Kafka's JAAS configuration).",
            component.address
        )));
    }
    w.env = vec![
        plain("CLUSTER_ID", cluster_id(component)),
        plain("KAFKA_NODE_ID", "1"),
        plain("KAFKA_PROCESS_ROLES", "broker,controller"),
        plain("KAFKA_CONTROLLER_QUORUM_VOTERS", format!("1@localhost:{CONTROLLER_PORT}")),
        plain("KAFKA_LISTENERS", format!("SASL://:{PORT},CONTROLLER://:{CONTROLLER_PORT}")),
        plain("KAFKA_ADVERTISED_LISTENERS", format!("SASL://{host}:{PORT}")),
        plain("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "SASL:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"),
        plain("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER"),
        plain("KAFKA_INTER_BROKER_LISTENER_NAME", "SASL"),
        plain("KAFKA_SASL_ENABLED_MECHANISMS", "PLAIN"),
        plain("KAFKA_SASL_MECHANISM_INTER_BROKER_PROTOCOL", "PLAIN"),
        secret("KAFKA_LISTENER_NAME_SASL_PLAIN_SASL_JAAS_CONFIG", jaas(&user, &password)),
        plain("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1"),
        plain("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1"),
        plain("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1"),
        plain("KAFKA_LOG_DIRS", "/var/lib/kafka/data"),
    ];
    w.ports = vec![Port::tcp("kafka", PORT, None)];
    w.probe = Some(Probe::Exec(vec!["/bin/sh".into(), "-c".into(), format!("nc -z 127.0.0.1 {PORT}")]));
    w.mounts = vec![Mount { volume: "data", path: "/var/lib/kafka/data".into(), sub_path: None, size: a.s("storage_size") }];
    w.security = Security { run_as_user: None, fs_group: Some(FS_GROUP) };
    w.resources = Some(super::Resources { cpu: "1000m".into(), memory: "1Gi".into() });
    w.controller = Controller::Stateful;
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Kind;

    #[test]
    fn the_cluster_id_is_kraft_shaped_and_stable() {
        let c = ComponentRef { address: "broker.stream".parse().unwrap(), kind: Kind::Broker, type_name: "kafka".into() };
        let id = cluster_id(&c);
        assert_eq!(id.len(), 22, "{id}");
        assert_eq!(id, cluster_id(&c));
        assert!(jaas("kerberos", "pw").contains("user_kerberos=\"pw\""));
    }
}

//! Cloud resource names derived from component addresses, shared by the cloud providers, and
//! the Kubernetes namespace of each kind of component.

use crate::schema::Kind;

/// The namespace a component is put in on Kubernetes when it sets none: one per kind (a broker's
/// is its type: `rabbitmq`, `kafka`, `mosquitto`).
pub fn default_namespace(kind: Kind, type_name: &str) -> &str {
    match kind {
        Kind::ObjectStorage => "minio",
        Kind::Database => "mongodb",
        Kind::Broker => type_name,
        Kind::Turn => "coturn",
        Kind::Vault => "kerberos-vault",
        Kind::Agent => "kerberos-agent",
        Kind::Hub => "kerberos-hub",
        Kind::Factory => "kerberos-factory",
        Kind::DriftSchedule => "kdeploy",
        Kind::Cluster | Kind::Chart | Kind::Data => "default",
    }
}

/// A DNS-label-like name from a component address: `cluster.cloud` → `cloud`,
/// `module.site.cluster.c["Front Door"]` → `site-c-front-door`. Lowercase letters, digits and
/// single dashes; `kdeploy` when nothing is left.
pub fn from_address(address: &str) -> String {
    let parts: Vec<&str> = address.split('.').filter(|part| !matches!(*part, "module" | "cluster" | "object_storage")).collect();
    let out = slug(&parts.join("-"));
    if out.is_empty() { "kdeploy".into() } else { out }
}

/// The one slug of kdeploy's object names: lowercase ASCII letters and digits, every run of
/// other characters one dash, no leading or trailing dash (`Edge_1 [eu]` → `edge-1-eu`).
pub fn slug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::{from_address, slug};

    #[test]
    fn names_from_addresses() {
        assert_eq!(from_address("cluster.cloud"), "cloud");
        assert_eq!(from_address("module.site.cluster.c[\"Front Door\"]"), "site-c-front-door");
        assert_eq!(from_address("cluster.x_y"), "x-y");
        assert_eq!(from_address("cluster.__"), "kdeploy");
    }

    #[test]
    fn slugs_are_lowercase_words_joined_by_single_dashes() {
        assert_eq!(slug("Edge_1 [eu]"), "edge-1-eu");
        assert_eq!(slug("--a..b--"), "a-b");
        assert_eq!(slug("agent.cam[\"Front Door\"]"), "agent-cam-front-door");
        assert_eq!(slug("__"), "");
    }
}

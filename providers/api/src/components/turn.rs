//! TURN: the relay of the WebRTC live view between agents and browsers (`turn` type `coturn`, or
//! `external`), and what an agent is given to use it.
//!
//! coturn listens for TURN over TCP on [`TURN_PORT`], the one port kdeploy exposes (a NodePort,
//! a LoadBalancer or the Docker host's port). Relayed traffic between two clients of the same
//! server (the agent and the browser both relaying, as Hub's live view does with
//! `AGENT_FORCE_TURN`) stays inside coturn; peers reaching the relay ports directly need the
//! relay range reachable too, which kdeploy does not publish.

use super::vault::Unresolved;
use super::{Client, File, FileSource, Get, Port, Workload, WorkloadError, base, versioned};
use crate::attrs::Attrs;
use crate::images;
use crate::provider::Reference;
use crate::value::Value;

/// TURN (and STUN) over TCP.
pub const TURN_PORT: u16 = 3478;
/// Where the coturn image's `turnserver` is told to read its configuration.
pub const CONFIG_PATH: &str = "/etc/coturn/turnserver.conf";
/// The relay port range (UDP, inside the container).
const RELAY_PORTS: (u16, u16) = (49160, 49200);

/// coturn's configuration: long-term credentials with one user, TCP and UDP on [`TURN_PORT`], no
/// TLS (the URI is `turn:`), no CLI, logs on stdout.
pub fn coturn_config(user: &str, password: &str, realm: &str, external_ip: Option<&str>) -> String {
    let mut c = format!(
        "# Written by kdeploy.\n\
         listening-port={TURN_PORT}\n\
         fingerprint\n\
         lt-cred-mech\n\
         realm={realm}\n\
         user={user}:{password}\n\
         min-port={}\n\
         max-port={}\n\
         no-cli\n\
         no-tls\n\
         no-dtls\n\
         no-multicast-peers\n\
         log-file=stdout\n",
        RELAY_PORTS.0, RELAY_PORTS.1
    );
    if let Some(ip) = external_ip {
        c.push_str(&format!("external-ip={ip}\n"));
    }
    c
}

/// coturn: its configuration (with the password) as a file, TCP published on `node_port`.
pub(super) fn coturn(a: &Get<'_>, address: &str) -> Result<Workload, WorkloadError> {
    let mut w = base("coturn", versioned(a, "coturn/coturn", images::COTURN));
    let (user, password, realm) = (a.s("username"), a.s("admin_password"), a.s("realm"));
    for (what, v) in [("username", &user), ("realm", &realm)] {
        if v.contains([':', '\n', ' ']) {
            return Err(WorkloadError::Invalid(format!("{address}: the TURN {what} {v:?} may not contain ':', spaces or line breaks.")));
        }
    }
    if password.contains('\n') {
        return Err(WorkloadError::Invalid(format!("{address}: the TURN password may not contain line breaks.")));
    }
    let external_ip = a.opt("external_ip");
    w.files = vec![File { path: CONFIG_PATH.into(), source: FileSource::Inline(coturn_config(&user, &password, &realm, external_ip.as_deref())) }];
    w.args = Some(vec!["-c".into(), CONFIG_PATH.into()]);
    w.ports = vec![Port { name: "turn", port: TURN_PORT, published: Some(0) }];
    w.service_type = a.opt("service_type").unwrap_or_else(|| "NodePort".into());
    w.resources = Some(super::Resources { cpu: "500m".into(), memory: "256Mi".into() });
    Ok(w)
}

/// How a component on cluster `from` uses `turn`: the in-cluster URI on the same cluster, the
/// external one from another (an error when it is not exposed); an external server's URI as is.
pub fn client(from: Option<&Value>, turn: &Reference) -> Result<Client, Unresolved> {
    let none = Attrs::new();
    let m = turn.attributes.as_map().unwrap_or(&none);
    let text = |k: &str| match m.get(k) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Unknown(_)) => Err(Unresolved::Unknown),
        _ => Ok(String::new()),
    };
    if turn.component.type_name == "external" {
        return Ok(Client { uri: text("uri")?, username: text("username")?, password: text("password")? });
    }
    let uri = super::mqtt::reach(from, m, &turn.component.address.to_string())?;
    Ok(Client { uri, username: text("username")?, password: text("admin_password")? })
}

/// What browsers use `turn` with (Hub's `turn.*` values): its URI from outside its cluster
/// (an error when it is not exposed), an external server's URI as is.
pub fn browser(turn: &Reference) -> Result<Client, Unresolved> {
    let none = Attrs::new();
    let m = turn.attributes.as_map().unwrap_or(&none);
    let text = |k: &str| match m.get(k) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Unknown(_)) => Err(Unresolved::Unknown),
        _ => Ok(String::new()),
    };
    if turn.component.type_name == "external" {
        return Ok(Client { uri: text("uri")?, username: text("username")?, password: text("password")? });
    }
    let uri = text("external_uri")?;
    if uri.is_empty() {
        let what = turn.component.address.to_string();
        return Err(Unresolved::Invalid(format!(
            "browsers use {what} for Hub's live view from outside the cluster, and it is not exposed outside it: set service_type = \"NodePort\" or \"LoadBalancer\" on {what}"
        )));
    }
    Ok(Client { uri, username: text("username")?, password: text("admin_password")? })
}

/// An agent's TURN settings: `turn` or the explicit `turn_*` attributes, not both.
pub fn check_agent(agent: &Attrs) -> Vec<super::vault::Problem> {
    if agent.get("turn").is_none_or(Value::is_null) {
        return Vec::new();
    }
    ["turn_uri", "turn_username", "turn_password"]
        .into_iter()
        .filter(|k| matches!(agent.get(*k), Some(Value::String(s)) if !s.is_empty()))
        .map(|k| super::vault::Problem {
            path: crate::value::AttrPath::attr(k),
            message: format!("{k} is set, and so is turn: the TURN server gives the agent its URI, user and password."),
            hint: format!("remove {k}, or remove turn to use a TURN server kdeploy does not know"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_has_one_long_term_user_and_no_tls() {
        let c = coturn_config("kerberos", "pw", "kerberos", Some("203.0.113.5"));
        for line in ["listening-port=3478", "lt-cred-mech", "user=kerberos:pw", "realm=kerberos", "no-tls", "external-ip=203.0.113.5"] {
            assert!(c.lines().any(|l| l == line), "{line} in\n{c}");
        }
        assert!(!coturn_config("kerberos", "pw", "kerberos", None).contains("external-ip"));
    }
}

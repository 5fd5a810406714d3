//! TURN: the relay of the WebRTC live view between agents and browsers (`turn` type `coturn`, or
//! `external`), and what an agent is given to use it.
//!
//! coturn listens for TURN over TCP and UDP on [`TURN_PORT`] (exposed on `node_port`: a
//! NodePort, a LoadBalancer or the Docker host's port) and relays media on the UDP ports of
//! `relay_ports`. coturn tells each client the relay port it allocated, on `external_ip`, so
//! every relay port is exposed as itself: node port, LoadBalancer port and Docker host port all
//! equal the container port.

use super::vault::Unresolved;
use super::{Client, File, FileSource, Get, Port, Workload, WorkloadError, base, versioned};
use crate::attrs::Attrs;
use crate::images;
use crate::provider::Reference;
use crate::value::Value;

/// TURN (and STUN) over TCP and UDP.
pub const TURN_PORT: u16 = 3478;
/// Where the coturn image's `turnserver` is told to read its configuration.
pub const CONFIG_PATH: &str = "/etc/coturn/turnserver.conf";
/// The default relay port range (UDP): inside Kubernetes' default NodePort range.
pub const DEFAULT_RELAY_PORTS: &str = "32000-32039";
/// The most relay ports kdeploy exposes (each is a Service port and a published Docker port).
pub const MAX_RELAY_PORTS: u32 = 100;
/// Kubernetes' default NodePort range, which a NodePort Service's relay ports must be inside.
pub const NODE_PORT_RANGE: (u16, u16) = (30000, 32767);

/// The URI clients (agents, browsers) reach a TURN server at: `turn:HOST:PORT`, over UDP as
/// WebRTC clients prefer (RFC 7065's default); coturn also serves TCP on the same port, so a
/// client configured for TCP reaches it too.
pub fn uri(host: &str, port: impl std::fmt::Display) -> String {
    format!("turn:{host}:{port}")
}

/// `relay_ports` ("MIN-MAX") as its first and last port, or what is wrong with it.
pub fn relay_range(text: &str) -> Result<(u16, u16), String> {
    let bad = || format!("relay_ports {text:?} is not a port range like \"{DEFAULT_RELAY_PORTS}\".");
    let (lo, hi) = text.split_once('-').ok_or_else(bad)?;
    let num = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p > 0);
    let (lo, hi) = num(lo).zip(num(hi)).ok_or_else(bad)?;
    if lo > hi {
        return Err(format!("relay_ports {text:?} starts after it ends."));
    }
    if u32::from(hi - lo) + 1 > MAX_RELAY_PORTS {
        return Err(format!(
            "relay_ports {text:?} has {} ports; kdeploy exposes at most {MAX_RELAY_PORTS} (each is a Service port and a published port).",
            u32::from(hi - lo) + 1
        ));
    }
    if lo <= TURN_PORT && TURN_PORT <= hi {
        return Err(format!("relay_ports {text:?} contains the TURN port {TURN_PORT}."));
    }
    Ok((lo, hi))
}

/// A coturn's `relay_ports`, at its attribute for `validate`; `cluster_type` is the type of its
/// cluster when known (Docker publishes any port, Kubernetes node ports lie in a range).
pub fn check(inputs: &Attrs, cluster_type: Option<&str>) -> Vec<super::vault::Problem> {
    let Some(Value::String(text)) = inputs.get("relay_ports") else { return Vec::new() };
    let mut problems = Vec::new();
    let problem = |message: String, hint: &str| super::vault::Problem { path: crate::value::AttrPath::attr("relay_ports"), message, hint: hint.into() };
    match relay_range(text) {
        Err(m) => problems.push(problem(m, &format!("e.g. relay_ports = \"{DEFAULT_RELAY_PORTS}\" (40 UDP ports, about one per concurrent live view)"))),
        Ok((lo, hi)) if node_ports(inputs) && cluster_type != Some("docker") && (lo < NODE_PORT_RANGE.0 || hi > NODE_PORT_RANGE.1) => problems.push(problem(
            format!(
                "relay_ports {text:?} is outside Kubernetes' NodePort range {}-{}, and each relay port is exposed as the same node port.",
                NODE_PORT_RANGE.0, NODE_PORT_RANGE.1
            ),
            &format!("use a range inside {}-{}, e.g. \"{DEFAULT_RELAY_PORTS}\", or service_type = \"LoadBalancer\"", NODE_PORT_RANGE.0, NODE_PORT_RANGE.1),
        )),
        Ok(_) => {}
    }
    problems
}

/// Whether the relay ports become node ports: a NodePort Service (the default service type).
fn node_ports(inputs: &Attrs) -> bool {
    matches!(inputs.get("service_type"), None | Some(Value::Null)) || matches!(inputs.get("service_type"), Some(Value::String(s)) if s == "NodePort")
}

/// coturn's configuration: long-term credentials with one user, TCP and UDP on [`TURN_PORT`],
/// relaying on `relay` (first and last UDP port), no TLS (the URI is `turn:`), no CLI, logs on
/// stdout.
pub fn coturn_config(user: &str, password: &str, realm: &str, external_ip: Option<&str>, relay: (u16, u16)) -> String {
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
        relay.0, relay.1
    );
    if let Some(ip) = external_ip {
        c.push_str(&format!("external-ip={ip}\n"));
    }
    c
}

/// coturn: its configuration (with the password) as a file, TURN over TCP and UDP published on
/// `node_port`, every relay port (UDP) published as itself.
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
    let relay =
        relay_range(&a.opt("relay_ports").unwrap_or_else(|| DEFAULT_RELAY_PORTS.into())).map_err(|m| WorkloadError::Invalid(format!("{address}: {m}")))?;
    let external_ip = a.opt("external_ip");
    w.files = vec![File { path: CONFIG_PATH.into(), source: FileSource::Inline(coturn_config(&user, &password, &realm, external_ip.as_deref(), relay)) }];
    w.args = Some(vec!["-c".into(), CONFIG_PATH.into()]);
    w.ports = ports(relay);
    w.service_type = a.opt("service_type").unwrap_or_else(|| "NodePort".into());
    w.resources = Some(super::Resources { cpu: "500m".into(), memory: "256Mi".into() });
    Ok(w)
}

/// TURN over TCP and UDP (published on `node_port`), then each relay port as itself.
fn ports(relay: (u16, u16)) -> Vec<Port> {
    let mut ports = vec![Port::tcp("turn", TURN_PORT, Some(0)), Port::udp("turn-udp", TURN_PORT, Some(0))];
    ports.extend((relay.0..=relay.1).map(|p| Port::udp(&format!("relay-{p}"), p, Some(p))));
    ports
}

/// How a component on cluster `from` uses `turn`: the in-cluster URI on the same cluster, the
/// external one from another (an error when it is not exposed); an external server's URI as is.
pub fn client(from: Option<&Value>, turn: &Reference) -> Result<Client, Unresolved> {
    let none = Attrs::new();
    let m = turn.attributes.as_map().unwrap_or(&none);
    let text = |k: &str| super::mqtt::text(m, k);
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
    let text = |k: &str| super::mqtt::text(m, k);
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
        let c = coturn_config("kerberos", "pw", "kerberos", Some("203.0.113.5"), (32000, 32039));
        for line in [
            "listening-port=3478",
            "lt-cred-mech",
            "user=kerberos:pw",
            "realm=kerberos",
            "no-tls",
            "external-ip=203.0.113.5",
            "min-port=32000",
            "max-port=32039",
        ] {
            assert!(c.lines().any(|l| l == line), "{line} in\n{c}");
        }
        assert!(!c.contains("no-udp"), "TURN over UDP is what clients try first");
        assert!(!coturn_config("kerberos", "pw", "kerberos", None, (32000, 32039)).contains("external-ip"));
    }

    #[test]
    fn a_relay_range_is_two_ports_in_order_and_small() {
        assert_eq!(relay_range("32000-32039"), Ok((32000, 32039)));
        assert_eq!(relay_range(" 40000 - 40000 "), Ok((40000, 40000)));
        for (bad, says) in [
            ("32000", "not a port range"),
            ("a-b", "not a port range"),
            ("0-10", "not a port range"),
            ("32000-70000", "not a port range"),
            ("32039-32000", "starts after it ends"),
            ("30000-30100", "101 ports"),
            ("3470-3480", "contains the TURN port"),
        ] {
            let e = relay_range(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn relay_ports_of_a_node_port_service_are_node_ports() {
        let attrs = |relay: &str, service: Option<&str>| {
            let mut a = Attrs::new();
            a.insert("relay_ports".into(), Value::string(relay));
            if let Some(s) = service {
                a.insert("service_type".into(), Value::string(s));
            }
            a
        };
        let k8s = Some("kubernetes");
        assert!(check(&attrs("32000-32039", None), k8s).is_empty());
        let p = check(&attrs("49160-49200", None), k8s);
        assert_eq!(p.len(), 1);
        assert!(p[0].message.contains("NodePort range 30000-32767"), "{}", p[0].message);
        assert_eq!(p[0].path, crate::value::AttrPath::attr("relay_ports"));
        assert!(check(&attrs("49160-49200", Some("LoadBalancer")), k8s).is_empty());
        assert!(check(&attrs("49160-49200", Some("NodePort")), k8s).len() == 1);
        assert!(check(&attrs("49160-49200", Some("NodePort")), None).len() == 1, "an unknown cluster type is checked as Kubernetes");
        assert!(check(&attrs("49160-49200", Some("NodePort")), Some("docker")).is_empty(), "Docker publishes any port");
        assert!(check(&attrs("1-2-3", Some("LoadBalancer")), Some("docker"))[0].message.contains("not a port range"));
    }

    #[test]
    fn turn_is_tcp_and_udp_and_each_relay_port_is_published_as_itself() {
        let p = ports((32000, 32002));
        assert_eq!(
            p,
            vec![
                Port::tcp("turn", 3478, Some(0)),
                Port::udp("turn-udp", 3478, Some(0)),
                Port::udp("relay-32000", 32000, Some(32000)),
                Port::udp("relay-32001", 32001, Some(32001)),
                Port::udp("relay-32002", 32002, Some(32002)),
            ]
        );
        assert!(p.iter().all(|p| p.name.len() <= 15), "Kubernetes port names");
    }
}

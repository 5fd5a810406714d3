//! MQTT: the brokers kdeploy runs for the agents and Hub's live view (`broker` types `mosquitto`
//! and `vernemq`), their configuration, and what an agent connects with.
//!
//! Both serve MQTT over TCP (1883) and over websockets (8080, for browsers), to one user whose
//! password kdeploy generates once. Mosquitto is the one the tests run for real: its
//! configuration and password file are written here and checked by a real `mosquitto`.

use base64::Engine as _;
use sha2::{Digest, Sha512};

use super::vault::{Problem, Unresolved};
use super::{Client, File, FileSource, Get, Port, Probe, Workload, WorkloadError, base, plain, secret, versioned};
use crate::attrs::Attrs;
use crate::images;
use crate::provider::Reference;
use crate::value::{AttrPath, Value};

/// MQTT over TCP.
pub const MQTT_PORT: u16 = 1883;
/// MQTT over websockets (VerneMQ's default websocket port; Mosquitto is told to use it too).
pub const WEBSOCKET_PORT: u16 = 8080;
/// Where the Mosquitto image reads its configuration (its default command's `-c`).
pub const CONFIG_PATH: &str = "/mosquitto/config/mosquitto.conf";
/// The password file the configuration names.
pub const PASSWORD_FILE_PATH: &str = "/mosquitto/config/password_file";
/// PBKDF2 rounds of a `$7$` password hash: what `mosquitto_passwd` writes.
const PBKDF2_ROUNDS: u32 = 101;

/// Mosquitto's configuration: no anonymous clients, the users of [`password_file`], MQTT on
/// [`MQTT_PORT`] and websockets on [`WEBSOCKET_PORT`], nothing kept on disk.
pub fn mosquitto_config() -> String {
    format!(
        "# Written by kdeploy.\n\
         per_listener_settings false\n\
         allow_anonymous false\n\
         password_file {PASSWORD_FILE_PATH}\n\
         persistence false\n\
         log_dest stdout\n\
         \n\
         listener {MQTT_PORT}\n\
         protocol mqtt\n\
         \n\
         listener {WEBSOCKET_PORT}\n\
         protocol websockets\n"
    )
}

/// A Mosquitto password file with one user: `user:$7$ROUNDS$SALT$HASH`, PBKDF2-HMAC-SHA512 as
/// `mosquitto_passwd` writes it. The salt is derived from the user and password, so the file
/// (and the container's configuration digest) changes only when they do.
pub fn password_file(user: &str, password: &str) -> String {
    let salt = &Sha512::digest(format!("kdeploy mosquitto salt\0{user}\0{password}").as_bytes())[..12];
    let hash = pbkdf2_sha512(password.as_bytes(), salt, PBKDF2_ROUNDS);
    let b64 = base64::engine::general_purpose::STANDARD;
    format!("{user}:$7${PBKDF2_ROUNDS}${}${}\n", b64.encode(salt), b64.encode(hash))
}

fn hmac_sha512(key: &[u8], message: &[&[u8]]) -> [u8; 64] {
    const BLOCK: usize = 128;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..64].copy_from_slice(&Sha512::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha512::new();
    inner.update(k.map(|b| b ^ 0x36));
    for part in message {
        inner.update(part);
    }
    let mut outer = Sha512::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// PBKDF2-HMAC-SHA512 with one 64-byte block of output (all Mosquitto stores).
fn pbkdf2_sha512(password: &[u8], salt: &[u8], rounds: u32) -> [u8; 64] {
    let mut u = hmac_sha512(password, &[salt, &1u32.to_be_bytes()]);
    let mut out = u;
    for _ in 1..rounds {
        u = hmac_sha512(password, &[&u]);
        for (o, b) in out.iter_mut().zip(u) {
            *o ^= b;
        }
    }
    out
}

/// The two ports of an MQTT broker: TCP published on `node_port`, websockets on
/// `websocket_node_port`.
fn ports(a: &Get<'_>, address: &str) -> Result<Vec<Port>, WorkloadError> {
    let ws = super::port(a.n("websocket_node_port"), "websocket_node_port", address)?;
    Ok(vec![Port::tcp("mqtt", MQTT_PORT, Some(0)), Port::tcp("websocket", WEBSOCKET_PORT, ws)])
}

fn exposed(mut w: Workload, a: &Get<'_>, address: &str) -> Result<Workload, WorkloadError> {
    w.ports = ports(a, address)?;
    w.service_type = a.opt("service_type").unwrap_or_else(|| "NodePort".into());
    w.resources = Some(super::Resources { cpu: "500m".into(), memory: "256Mi".into() });
    Ok(w)
}

/// Mosquitto: the configuration and password file as files, its own client as the probe.
pub(super) fn mosquitto(a: &Get<'_>, address: &str) -> Result<Workload, WorkloadError> {
    let mut w = base("mosquitto", versioned(a, "eclipse-mosquitto", images::MOSQUITTO));
    let (user, password) = (a.s("username"), a.s("admin_password"));
    w.files = vec![
        File { path: CONFIG_PATH.into(), source: FileSource::Inline(mosquitto_config()) },
        File { path: PASSWORD_FILE_PATH.into(), source: FileSource::Inline(password_file(&user, &password)) },
    ];
    // The probe subscribes as the user: the broker is up and the password file is the one given.
    w.env = vec![plain("MQTT_USERNAME", user), secret("MQTT_PASSWORD", password)];
    w.probe = Some(Probe::Exec(vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("mosquitto_sub -h 127.0.0.1 -p {MQTT_PORT} -u \"$MQTT_USERNAME\" -P \"$MQTT_PASSWORD\" -t '$SYS/broker/version' -C 1 -W 5 >/dev/null"),
    ]));
    exposed(w, a, address)
}

/// VerneMQ, configured by its image's environment (`shared/docs/kerberos-stack.md` §1.4): the
/// user is the suffix of `DOCKER_VERNEMQ_USER_<user>`, so it must be a valid variable name.
pub(super) fn vernemq(a: &Get<'_>, address: &str) -> Result<Workload, WorkloadError> {
    let mut w = base("vernemq", versioned(a, "vernemq/vernemq", images::VERNEMQ));
    let user = a.s("username");
    if !user.is_empty() && !user.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(WorkloadError::Invalid(format!(
            "{address}: the VerneMQ user {user:?} is given to VerneMQ as the variable DOCKER_VERNEMQ_USER_{user}, so it may contain only letters, digits and _."
        )));
    }
    w.env = vec![
        plain("DOCKER_VERNEMQ_ACCEPT_EULA", "yes"),
        plain("DOCKER_VERNEMQ_ALLOW_ANONYMOUS", "off"),
        plain("DOCKER_VERNEMQ_LISTENER__TCP__DEFAULT", format!("0.0.0.0:{MQTT_PORT}")),
        plain("DOCKER_VERNEMQ_LISTENER__WS__DEFAULT", format!("0.0.0.0:{WEBSOCKET_PORT}")),
        secret(&format!("DOCKER_VERNEMQ_USER_{user}"), a.s("admin_password")),
    ];
    w.probe = Some(Probe::Exec(vec!["/bin/sh".into(), "-c".into(), "/vernemq/bin/vernemq ping | grep -q pong".into()]));
    exposed(w, a, address)
}

/// Whether a broker's attributes are an MQTT broker's: an external broker with protocol
/// `mqtt`, or one kdeploy runs (they have a websocket port).
pub fn is_mqtt(broker: &Attrs) -> bool {
    match broker.get("protocol") {
        Some(Value::String(p)) => p == "mqtt",
        _ => broker.contains_key("websocket_node_port"),
    }
}

/// How a component on cluster `from` connects to `broker`: its in-cluster URI on the same
/// cluster, its external URI from another one (an error when it is not exposed).
pub fn client(from: Option<&Value>, broker: &Reference) -> Result<Client, Unresolved> {
    let (m, what) = mqtt_attrs(broker)?;
    let text = |k: &str| text(m, k);
    if broker.component.type_name == "external" {
        let host = text("host")?;
        let uri = if host.contains("://") { host } else { format!("tcp://{host}") };
        return Ok(Client { uri, username: text("username")?, password: text("password")? });
    }
    if m.get("admin_password").is_none_or(Value::is_unknown) {
        return Err(Unresolved::Unknown);
    }
    let uri = reach(from, m, &what)?;
    Ok(Client { uri, username: text("username")?, password: text("admin_password")? })
}

/// What browsers open Hub's live view with (Hub's `mqtt.*` values): the broker's websocket
/// endpoint from outside its cluster, split into host, port and protocol (`ws`, `wss`), and
/// its user. An external broker's `host` is taken as a URI (`wss://mqtt.example.com:8443`;
/// `ws` without a scheme).
#[derive(Debug, Clone, PartialEq)]
pub struct Browser {
    pub host: String,
    pub port: u16,
    pub protocol: String,
    pub username: String,
    pub password: String,
}

/// The [`Browser`] settings of `broker`.
pub fn browser(broker: &Reference) -> Result<Browser, Unresolved> {
    let (m, what) = mqtt_attrs(broker)?;
    let text = |k: &str| text(m, k);
    let external = broker.component.type_name == "external";
    let uri = if external { text("host")? } else { text("external_websocket_uri")? };
    if uri.is_empty() {
        return Err(Unresolved::Invalid(format!(
            "browsers open Hub's live view from outside the cluster, and {what} is not exposed outside it: set service_type = \"NodePort\" or \"LoadBalancer\" on {what}"
        )));
    }
    let (protocol, rest) = uri.split_once("://").unwrap_or(("ws", &uri));
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let default_port = if protocol == "wss" { 443 } else { 80 };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h.to_string(), p.parse().unwrap_or(default_port)),
        _ => (authority.to_string(), default_port),
    };
    let password = if external { text("password")? } else { text("admin_password")? };
    Ok(Browser { host, port, protocol: protocol.to_string(), username: text("username")?, password })
}

/// The attributes of a referenced MQTT broker and its address (for messages); an error when
/// it is another kind of broker.
fn mqtt_attrs(broker: &Reference) -> Result<(&Attrs, String), Unresolved> {
    let what = broker.component.address.to_string();
    let m = broker.attributes.as_map().filter(|m| is_mqtt(m)).ok_or_else(|| {
        Unresolved::Invalid(format!("{what} is not an MQTT broker (use a broker of type mosquitto or vernemq, or external with protocol = \"mqtt\")"))
    })?;
    Ok((m, what))
}

/// A text attribute of a referenced component: empty when absent, unknown until apply.
pub(crate) fn text(m: &Attrs, key: &str) -> Result<String, Unresolved> {
    match m.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Unknown(_)) => Err(Unresolved::Unknown),
        _ => Ok(String::new()),
    }
}

/// The URI a component on cluster `from` reaches a served component (attributes `m`) with: its
/// `uri` on the same cluster, its `external_uri` from another one (an error saying how to expose
/// it when it is not).
pub fn reach(from: Option<&Value>, m: &Attrs, what: &str) -> Result<String, Unresolved> {
    let cluster = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let (here, there) = (cluster(from), cluster(m.get("cluster")));
    let key = if here.is_none() || there.is_none() || here == there { "uri" } else { "external_uri" };
    match m.get(key) {
        Some(Value::String(u)) => Ok(u.clone()),
        None | Some(Value::Unknown(_)) if key == "uri" => Err(Unresolved::Unknown),
        Some(Value::Unknown(_)) => Err(Unresolved::Unknown),
        _ => Err(Unresolved::Invalid(format!(
            "it runs on {} and connects to {what}, which runs on {} and is not exposed outside it: set service_type = \"NodePort\" or \"LoadBalancer\" on {what}, or run both on one cluster",
            here.unwrap_or_default(),
            there.unwrap_or_default()
        ))),
    }
}

/// The MQTT settings of an agent (or a vault, or a hub): `mqtt` (a broker) or the explicit
/// `mqtt_*` attributes, not both; the broker must speak MQTT.
pub fn check_agent(agent: &Attrs, broker: Option<&Attrs>) -> Vec<Problem> {
    let mut out = Vec::new();
    if agent.get("mqtt").is_none_or(Value::is_null) {
        return out;
    }
    for k in ["mqtt_uri", "mqtt_username", "mqtt_password"] {
        if matches!(agent.get(k), Some(Value::String(s)) if !s.is_empty()) {
            out.push(Problem {
                path: AttrPath::attr(k),
                message: format!("{k} is set, and so is mqtt: the broker gives the MQTT URI, user and password."),
                hint: format!("remove {k}, or remove mqtt to connect to a broker kdeploy does not know"),
            });
        }
    }
    if broker.is_some_and(|b| !is_mqtt(b)) {
        out.push(Problem {
            path: AttrPath::attr("mqtt"),
            message: "mqtt references a broker that does not speak MQTT.".into(),
            hint: "reference a broker of type mosquitto or vernemq, or external with protocol = \"mqtt\"".into(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(type_name: &str, pairs: &[(&str, Value)]) -> Reference {
        let address = format!("broker.{type_name}");
        Reference {
            component: crate::provider::ComponentRef { address: address.parse().unwrap(), kind: crate::schema::Kind::Broker, type_name: type_name.into() },
            attributes: Value::Map(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()).into(),
        }
    }

    #[test]
    fn browsers_get_the_websocket_endpoint_from_outside_split_for_hubs_values() {
        let ours = |ws: Value| {
            broker(
                "mosquitto",
                &[
                    ("websocket_node_port", Value::from_i64(31080)),
                    ("external_websocket_uri", ws),
                    ("username", Value::string("kerberos")),
                    ("admin_password", Value::string("pw")),
                ],
            )
        };
        let b = browser(&ours(Value::string("ws://10.0.0.5:31080"))).unwrap();
        assert_eq!(b, Browser { host: "10.0.0.5".into(), port: 31080, protocol: "ws".into(), username: "kerberos".into(), password: "pw".into() });
        match browser(&ours(Value::Null)) {
            Err(Unresolved::Invalid(m)) => assert!(m.contains("not exposed") && m.contains("NodePort"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(browser(&ours(Value::Unknown("x".into()))), Err(Unresolved::Unknown));
        let external = |host: &str| {
            broker(
                "external",
                &[("protocol", Value::string("mqtt")), ("host", Value::string(host)), ("username", Value::string("u")), ("password", Value::string("p"))],
            )
        };
        let b = browser(&external("wss://mqtt.example.com:8443/mqtt")).unwrap();
        assert_eq!((b.host.as_str(), b.port, b.protocol.as_str(), b.password.as_str()), ("mqtt.example.com", 8443, "wss", "p"));
        let b = browser(&external("wss://mqtt.example.com")).unwrap();
        assert_eq!((b.host.as_str(), b.port), ("mqtt.example.com", 443));
        let queue = broker("rabbitmq", &[("queue", Value::string("q"))]);
        assert!(matches!(browser(&queue), Err(Unresolved::Invalid(_))));
    }

    #[test]
    fn the_password_hash_is_mosquitto_passwds() {
        // `mosquitto_passwd -c -b file kerberos s3cret` (Mosquitto 2.0.11) wrote this line.
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = b64.decode("z+zLGvMDaSTextFm").unwrap();
        let hash = pbkdf2_sha512(b"s3cret", &salt, 101);
        assert_eq!(b64.encode(hash), "81xGUQeFMO0PiwNvAhZ5j8hQ8Ay14cd6ykM7E8BX/z5n53mtS5IATW2XwZAAwKexFRQHTDUESroa+S1F+KbfTw==");
        let line = password_file("kerberos", "s3cret");
        assert!(line.starts_with("kerberos:$7$101$") && line.ends_with('\n'), "{line}");
        assert_eq!(line, password_file("kerberos", "s3cret"), "stable: no plan change without a new password");
        assert_ne!(line, password_file("kerberos", "other"));
    }
}

//! The live view's servers and the pipeline's queue, through the CLI: MQTT brokers (`broker`
//! types `mosquitto` and `vernemq`), the TURN server (`turn` type `coturn`) and the agents
//! connected to them, and Kafka (`broker` type `kafka`) with Vault's integration, on the
//! Kubernetes test API server and on the Docker engine. The Mosquitto configuration and
//! password file kdeploy writes are then run by a real `mosquitto` (Debian's package), and a
//! real client connects with the credentials the agents were given. No Kafka or coturn can run
//! here: their rendering and wiring are what is checked.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kdeploy::providers::Providers;
use kdeploy_kube_testserver::{Options, TestServer};

use crate::support::{Run, TestStack, run_with};

fn kdeploy(dir: &Path, args: &[&str]) -> Run {
    run_with(dir, Providers::builtin(), args, BTreeMap::new(), "")
}

fn ok(r: &Run) {
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
}

/// The Kubernetes stack: Vault's dependencies, a Mosquitto and a VerneMQ broker, a coturn, two
/// agents connected to the Mosquitto and the coturn.
fn kube_stack(kubeconfig: &str) -> String {
    format!(
        r#"cluster "k8s" {{
  type       = "kubernetes"
  kubeconfig = "{kubeconfig}"
  context    = "test"
}}

object_storage "recordings" {{
  type              = "minio"
  readiness_timeout = "20s"
}}

database "meta" {{
  type              = "mongodb"
  readiness_timeout = "20s"
}}

broker "live" {{
  type              = "mosquitto"
  readiness_timeout = "20s"
}}

broker "stream" {{
  type              = "kafka"
  readiness_timeout = "20s"
}}

broker "legacy" {{
  type                = "vernemq"
  service_type        = "ClusterIP"
  readiness_timeout   = "20s"
}}

turn "relay" {{
  type              = "coturn"
  readiness_timeout = "20s"
}}

vault "main" {{
  database          = database.meta
  storage           = object_storage.recordings
  broker            = broker.stream
  readiness_timeout = "20s"
}}

agent "cam" {{
  for_each          = toset(["front", "back"])
  vault             = vault.main
  mqtt              = broker.live
  turn              = turn.relay
  rtsp_url          = "rtsp://10.0.0.1/${{each.key}}"
  readiness_timeout = "20s"
}}

output "mqtt_external" {{
  value = broker.live.external_uri
}}

output "mqtt_browser" {{
  value = broker.live.external_websocket_uri
}}

output "turn_external" {{
  value = turn.relay.external_uri
}}
"#
    )
}

#[test]
fn mqtt_and_turn_servers_and_connected_agents_on_kubernetes() {
    let server = TestServer::start(Options::default());
    crate::support::vault_standin(&server, "kerberos-vault", "vault-main", Default::default());
    let s = TestStack::new(&[]);
    let kubeconfig = server.write_kubeconfig(s.path(), "test").display().to_string();
    s.write("main.hcl", &kube_stack(&kubeconfig));
    ok(&kdeploy(s.path(), &["apply", "--auto-approve"]));

    // Mosquitto: a Deployment with its configuration in a Secret, TCP and websockets on node ports.
    let dep = server.object("apps/v1", "Deployment", Some("mosquitto"), "broker-live").expect("the mosquitto Deployment");
    assert_eq!(dep["spec"]["template"]["spec"]["containers"][0]["image"], kdeploy_provider::images::MOSQUITTO);
    let svc = server.object("v1", "Service", Some("mosquitto"), "broker-live").expect("its Service");
    assert_eq!(svc["spec"]["type"], "NodePort");
    let ports: Vec<(i64, i64)> =
        svc["spec"]["ports"].as_array().unwrap().iter().map(|p| (p["port"].as_i64().unwrap(), p["nodePort"].as_i64().unwrap())).collect();
    assert_eq!(ports, [(1883, 31883), (8080, 31080)]);
    assert_eq!(kdeploy(s.path(), &["output", "--raw", "mqtt_external"]).stdout.trim(), "tcp://127.0.0.1:31883");
    assert_eq!(kdeploy(s.path(), &["output", "--raw", "mqtt_browser"]).stdout.trim(), "ws://127.0.0.1:31080");

    // Every agent connects to it, as its user.
    let password = s.attr("broker.live", "admin_password").as_str().expect("a generated password").to_string();
    for cam in ["front", "back"] {
        let env = server.workload_env("apps/v1", "Deployment", "kerberos-agent", &format!("agent-cam-{cam}")).expect("the agent");
        assert_eq!(env["AGENT_MQTT_URI"], "tcp://broker-live.mosquitto:1883");
        assert_eq!(env["AGENT_MQTT_USERNAME"], "kerberos");
        assert_eq!(env["AGENT_MQTT_PASSWORD"], password);
    }
    let agent = server.object("apps/v1", "Deployment", Some("kerberos-agent"), "agent-cam-front").unwrap();
    assert!(!agent.to_string().contains(&password), "the password is in the agent's Secret only");

    // coturn: its configuration (with the user) in a Secret, TURN over TCP on a node port; the
    // agents relay through it.
    let turn_password = s.attr("turn.relay", "admin_password").as_str().expect("a generated TURN password").to_string();
    let dep = server.object("apps/v1", "Deployment", Some("coturn"), "turn-relay").expect("the coturn Deployment");
    assert_eq!(dep["spec"]["template"]["spec"]["containers"][0]["args"], serde_json::json!(["-c", "/etc/coturn/turnserver.conf"]));
    assert!(!dep.to_string().contains(&turn_password), "the TURN password is in the Secret only");
    let svc = server.object("v1", "Service", Some("coturn"), "turn-relay").expect("its Service");
    assert_eq!(svc["spec"]["type"], "NodePort");
    // TURN over TCP and UDP on node_port, and each relay port (UDP) as the same node port:
    // coturn tells clients the relay port it allocated.
    let ports: Vec<(String, i64, i64)> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["protocol"].as_str().unwrap().to_string(), p["port"].as_i64().unwrap(), p["nodePort"].as_i64().unwrap()))
        .collect();
    let mut expected = vec![("TCP".to_string(), 3478, 30478), ("UDP".to_string(), 3478, 30478)];
    expected.extend((32000..=32039).map(|p| ("UDP".to_string(), p, p)));
    assert_eq!(ports, expected);
    let declared = dep["spec"]["template"]["spec"]["containers"][0]["ports"].as_array().unwrap();
    assert_eq!(declared.len(), 42, "the container declares every port: {declared:?}");
    assert!(declared.iter().any(|p| p["containerPort"] == 32039 && p["protocol"] == "UDP"), "{declared:?}");
    let conf = server.object("v1", "Secret", Some("coturn"), "turn-relay-files").expect("the coturn files");
    use base64::Engine as _;
    let conf = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(conf["data"]["turnserver.conf"].as_str().unwrap()).unwrap()).unwrap();
    assert!(conf.lines().any(|l| l == format!("user=kerberos:{turn_password}")) && conf.contains("lt-cred-mech"), "{conf}");
    assert!(conf.contains("min-port=32000\nmax-port=32039\n"), "{conf}");
    assert_eq!(kdeploy(s.path(), &["output", "--raw", "turn_external"]).stdout.trim(), "turn:127.0.0.1:30478");
    for cam in ["front", "back"] {
        let env = server.workload_env("apps/v1", "Deployment", "kerberos-agent", &format!("agent-cam-{cam}")).unwrap();
        assert_eq!(env["AGENT_TURN_URI"], "turn:turn-relay.coturn:3478");
        assert_eq!(env["AGENT_TURN_USERNAME"], "kerberos");
        assert_eq!(env["AGENT_TURN_PASSWORD"], turn_password);
    }

    // VerneMQ: configured by its environment, not exposed (ClusterIP).
    let env = server.workload_env("apps/v1", "Deployment", "vernemq", "broker-legacy").expect("the vernemq Deployment");
    let legacy_password = s.attr("broker.legacy", "admin_password").as_str().unwrap().to_string();
    assert_eq!(env["DOCKER_VERNEMQ_ALLOW_ANONYMOUS"], "off");
    assert_eq!(env["DOCKER_VERNEMQ_USER_kerberos"], legacy_password);
    assert_eq!(server.object("v1", "Service", Some("vernemq"), "broker-legacy").unwrap()["spec"]["type"], "ClusterIP");
    assert_eq!(s.attr("broker.legacy", "external_uri"), serde_json::Value::Null);

    // Kafka: one KRaft node with a SASL PLAIN user, and Vault's kafka integration publishing to it.
    let kafka_password = s.attr("broker.stream", "admin_password").as_str().expect("a generated Kafka password").to_string();
    let env = server.workload_env("apps/v1", "StatefulSet", "kafka", "broker-stream").expect("the kafka StatefulSet");
    assert_eq!(env["KAFKA_ADVERTISED_LISTENERS"], "SASL://broker-stream.kafka:9092");
    assert_eq!(env["KAFKA_PROCESS_ROLES"], "broker,controller");
    assert!(env["KAFKA_LISTENER_NAME_SASL_PLAIN_SASL_JAAS_CONFIG"].contains(&format!("user_kerberos=\"{kafka_password}\"")));
    let vault = server.workload_env("apps/v1", "Deployment", "kerberos-vault", "vault-main").unwrap();
    let integrations: serde_json::Value = serde_json::from_str(&vault["VAULT_INTEGRATIONS"]).unwrap();
    assert_eq!(
        integrations,
        serde_json::json!([{"name": "stream", "queue": "kafka", "broker": "broker-stream.kafka:9092", "group": "kerberos-vault", "topic": "kcloud-event-queue",
            "username": "kerberos", "password": kafka_password, "mechanism": "PLAIN", "security": "SASL_PLAINTEXT"}])
    );

    let r = kdeploy(s.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "a second plan changes nothing:\n{}{}", r.stdout, r.stderr);

    // The files Mosquitto is started with, as kdeploy wrote them, work with a real Mosquitto.
    let files = server.object("v1", "Secret", Some("mosquitto"), "broker-live-files").expect("the files Secret");
    let file = |key: &str| {
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD.decode(files["data"][key].as_str().unwrap_or_else(|| panic!("{key} in {files}"))).unwrap();
        String::from_utf8(b).unwrap()
    };
    real_mosquitto(&file("mosquitto.conf"), &file("password_file"), "kerberos", &password);

    // A new password: the broker and every agent roll.
    s.write(
        "main.hcl",
        &kube_stack(&kubeconfig).replace("type              = \"mosquitto\"", "type              = \"mosquitto\"\n  password          = \"chosen-password\""),
    );
    let r = kdeploy(s.path(), &["plan"]);
    for addr in ["broker.live", "agent.cam[\"front\"]", "agent.cam[\"back\"]"] {
        assert!(r.stdout.contains(&format!("# {addr} will be updated in place")), "{}{}", r.stdout, r.stderr);
    }
    ok(&kdeploy(s.path(), &["apply", "--auto-approve"]));
    let env = server.workload_env("apps/v1", "Deployment", "kerberos-agent", "agent-cam-back").unwrap();
    assert_eq!(env["AGENT_MQTT_PASSWORD"], "chosen-password");
}

#[test]
fn an_agents_mqtt_broker_must_speak_mqtt_and_brokers_and_turn_servers_replace_the_explicit_settings() {
    let base = r#"cluster "k" {
  type = "docker"
}
object_storage "rec" {
  type = "minio"
}
database "meta" {
  type = "mongodb"
}
broker "events" {
  type = "rabbitmq"
}
broker "live" {
  type = "mosquitto"
}
vault "main" {
  database = database.meta
  storage  = object_storage.rec
}
"#;
    let s = TestStack::new(&[(
        "main.hcl",
        &format!("{base}agent \"a\" {{\n  vault    = vault.main\n  rtsp_url = \"rtsp://x/1\"\n  mqtt     = broker.events\n}}\n"),
    )]);
    let r = kdeploy(s.path(), &["validate"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("mqtt references a broker that does not speak MQTT"), "{}", r.stderr);
    assert!(r.stderr.contains("main.hcl:23"), "names the line: {}", r.stderr);

    s.write(
        "main.hcl",
        &format!(
            "{base}agent \"a\" {{\n  vault    = vault.main\n  rtsp_url = \"rtsp://x/1\"\n  mqtt     = broker.live\n  mqtt_uri = \"tcp://elsewhere:1883\"\n}}\n"
        ),
    );
    let r = kdeploy(s.path(), &["validate"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("mqtt_uri is set, and so is mqtt"), "{}", r.stderr);
    assert!(r.stderr.contains("main.hcl:24"), "names the line: {}", r.stderr);

    s.write(
        "main.hcl",
        &format!("{base}turn \"relay\" {{\n  type = \"coturn\"\n}}\nagent \"a\" {{\n  vault    = vault.main\n  rtsp_url = \"rtsp://x/1\"\n  turn     = turn.relay\n  turn_uri = \"turn:elsewhere:3478\"\n}}\n"),
    );
    let r = kdeploy(s.path(), &["validate"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("turn_uri is set, and so is turn"), "{}", r.stderr);
    assert!(r.stderr.contains("main.hcl:27"), "names the line: {}", r.stderr);
}

#[test]
fn a_relay_range_is_checked_where_it_is_written() {
    let stack = |cluster: &str, relay: &str, service: &str| {
        format!(
            "cluster \"k\" {{\n  type = \"{cluster}\"\n}}\nturn \"relay\" {{\n  type         = \"coturn\"\n  service_type = \"{service}\"\n  relay_ports  = \"{relay}\"\n}}\n"
        )
    };
    let s = TestStack::new(&[("main.hcl", &stack("microk8s", "32000-32039", "NodePort"))]);
    ok(&kdeploy(s.path(), &["validate"]));
    for (cluster, relay, service, says) in [
        ("docker", "32039-32000", "NodePort", "starts after it ends"),
        ("microk8s", "30000-30200", "LoadBalancer", "at most 100"),
        ("docker", "31000", "NodePort", "is not a port range"),
        ("microk8s", "49160-49200", "NodePort", "outside Kubernetes' NodePort range 30000-32767"),
    ] {
        s.write("main.hcl", &stack(cluster, relay, service));
        let r = kdeploy(s.path(), &["validate"]);
        assert_ne!(r.code, 0, "{relay} with {service} on {cluster}");
        assert!(r.stderr.contains(says), "{relay}: {}", r.stderr);
        assert!(r.stderr.contains("main.hcl:7"), "names the line: {}", r.stderr);
    }
    // Outside the NodePort range: a LoadBalancer on Kubernetes, and Docker, which publishes any port.
    for (cluster, service) in [("microk8s", "LoadBalancer"), ("docker", "NodePort")] {
        s.write("main.hcl", &stack(cluster, "49160-49200", service));
        ok(&kdeploy(s.path(), &["validate"]));
    }
}

#[test]
fn ingress_attributes_on_a_docker_vault_are_refused_where_they_are_written() {
    let stack = |cluster: &str| {
        format!(
            "cluster \"k\" {{\n  type = \"{cluster}\"\n}}\ndatabase \"meta\" {{\n  type = \"mongodb\"\n}}\nobject_storage \"rec\" {{\n  type = \"minio\"\n}}\nvault \"main\" {{\n  database     = database.meta\n  storage      = object_storage.rec\n  ingress_host = \"vault.example.com\"\n  cert_issuer  = \"letsencrypt\"\n}}\n"
        )
    };
    let s = TestStack::new(&[("main.hcl", &stack("docker"))]);
    let r = kdeploy(s.path(), &["validate"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("ingress_host configures a Kubernetes Ingress, but this component runs on a Docker cluster"), "{}", r.stderr);
    assert!(r.stderr.contains("main.hcl:13") && r.stderr.contains("main.hcl:14"), "each at its line: {}", r.stderr);
    assert!(r.stderr.contains("published node_port"), "what happens instead: {}", r.stderr);
    s.write("main.hcl", &stack("microk8s"));
    ok(&kdeploy(s.path(), &["validate"]));
}

/// A Mosquitto started with kdeploy's files, killed when dropped.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn client(tool: &str, port: u16, auth: Option<(&str, &str)>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(tool);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some((u, p)) = auth {
        cmd.args(["-u", u, "-P", p]);
    }
    cmd.args(args).output().unwrap_or_else(|e| panic!("run {tool}: {e}"))
}

/// Runs a real Mosquitto with `conf` (its listeners moved to free local ports and its password
/// file path to a temporary directory: nothing else changed) and `passwd`, then checks that
/// `user`/`password` may publish and subscribe, a wrong password and anonymous clients may not,
/// the probe kdeploy gives the container answers, and the websocket listener is up. Skipped
/// with a printed reason when Mosquitto is not installed (a failure when CI is set).
pub fn real_mosquitto(conf: &str, passwd: &str, user: &str, password: &str) {
    // Debian installs the broker in /usr/sbin, outside a user's PATH.
    let runs = |p: &str| Command::new(p).arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    let mosquitto = ["mosquitto", "/usr/sbin/mosquitto"].into_iter().find(|p| runs(p));
    let Some(mosquitto) = mosquitto else {
        assert!(std::env::var_os("CI").is_none(), "CI is set but mosquitto is not installed (apt-get install mosquitto mosquitto-clients)");
        eprintln!("skipping the real Mosquitto check: mosquitto is not installed (apt-get install mosquitto mosquitto-clients)");
        return;
    };
    if Command::new("mosquitto_pub").arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI is set but mosquitto_pub is not installed (apt-get install mosquitto mosquitto-clients)");
        eprintln!("skipping the real Mosquitto check: mosquitto-clients is not installed (apt-get install mosquitto mosquitto-clients)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    // Mosquitto started as root reads its files as the mosquitto user.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (tcp, ws) = (free_port(), free_port());
    let pw_path = dir.path().join("password_file");
    let mut local = conf.to_string();
    for (from, to) in [
        ("listener 1883\n".to_string(), format!("listener {tcp} 127.0.0.1\n")),
        ("listener 8080\n".to_string(), format!("listener {ws} 127.0.0.1\n")),
        (format!("password_file {}\n", kdeploy_provider::components::mqtt::PASSWORD_FILE_PATH), format!("password_file {}\n", pw_path.display())),
    ] {
        assert!(local.contains(&from), "the configuration has {from:?}:\n{conf}");
        local = local.replace(&from, &to);
    }
    std::fs::write(&pw_path, passwd).unwrap();
    let conf_path = dir.path().join("mosquitto.conf");
    std::fs::write(&conf_path, &local).unwrap();
    for p in [&pw_path, &conf_path] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let child = Command::new(mosquitto).arg("-c").arg(&conf_path).stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("start mosquitto");
    let _broker = Broker(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", tcp)).is_err() || std::net::TcpStream::connect(("127.0.0.1", ws)).is_err() {
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "mosquitto did not listen on {tcp} and {ws}:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = client("mosquitto_pub", tcp, Some((user, password)), &["-t", "kerberos/agent/test", "-m", "hello", "-r"]);
    assert!(out.status.success(), "publish as the agents' user: {}", String::from_utf8_lossy(&out.stderr));
    let out = client("mosquitto_sub", tcp, Some((user, password)), &["-t", "kerberos/agent/test", "-C", "1", "-W", "5"]);
    assert!(out.status.success(), "subscribe: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");
    // The container's readiness probe (the same command, with the same credentials).
    let out = client("mosquitto_sub", tcp, Some((user, password)), &["-t", "$SYS/broker/version", "-C", "1", "-W", "5"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("mosquitto"), "the probe's topic answers: {out:?}");
    for auth in [Some((user, "wrong-password")), None] {
        let out = client("mosquitto_pub", tcp, auth, &["-t", "kerberos/agent/test", "-m", "intruder"]);
        assert!(!out.status.success(), "refused without the right password ({auth:?})");
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(err.contains("not authori") || err.contains("refused"), "{err}");
    }
}

/// The Docker stack: Vault's dependencies, Vault and one agent as stand-ins (see
/// tests/it/docker.rs), and a Mosquitto broker the agent connects to. The broker runs the
/// stand-in too (the machines have no registry); its files are read back from its container.
#[cfg(feature = "docker")]
fn docker_stack(cluster: &str, vault_port: u16, mqtt_port: u16, ws_port: u16, turn_port: u16, relay: &str) -> String {
    use crate::docker::{core_blocks, overrides};
    format!(
        r#"{core}
broker "stream" {{
  type = "kafka"
{other}}}

broker "live" {{
  type                = "mosquitto"
  node_port           = {mqtt_port}
  websocket_node_port = {ws_port}
{other}}}

turn "relay" {{
  type        = "coturn"
  node_port   = {turn_port}
  relay_ports = "{relay}"
{other}}}

vault "main" {{
  database  = database.meta
  storage   = object_storage.rec
  broker    = broker.stream
  node_port = {vault_port}
{vault}}}

agent "cam" {{
  vault    = vault.main
  mqtt     = broker.live
  turn     = turn.relay
  rtsp_url = "rtsp://10.0.0.1/s1"
{other}}}
"#,
        core = core_blocks(cluster),
        vault = overrides("vault"),
        other = overrides("agent"),
    )
}

#[cfg(feature = "docker")]
#[test]
fn mosquitto_coturn_and_a_connected_agent_on_docker() {
    use kdeploy_provider_docker::testing;

    use crate::docker::{Cleanup, engine, free_port};
    if !engine() {
        return;
    }
    let c = format!("kdq{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    testing::cleanup(&c);
    let _guard = Cleanup(c.clone());
    let (mqtt_port, ws_port) = (free_port(), free_port());
    // Three relay ports below the ephemeral range (where free ports come from), at a place of
    // their own so parallel runs do not meet.
    let relay = 30100 + (uuid::Uuid::new_v4().as_u128() % 2600) as u16;
    let turn_port = free_port();
    let s = TestStack::new(&[("main.hcl", &docker_stack(&c, free_port(), mqtt_port, ws_port, turn_port, &format!("{relay}-{}", relay + 2)))]);
    ok(&kdeploy(s.path(), &["apply", "--auto-approve"]));

    // coturn publishes TURN on node_port over TCP and UDP, and each relay port (UDP) as itself.
    let published = testing::port_bindings(&format!("kdeploy-{c}-turn-relay"));
    let mut expected: BTreeMap<String, Vec<String>> =
        [("3478/tcp".to_string(), vec![turn_port.to_string()]), ("3478/udp".to_string(), vec![turn_port.to_string()])].into();
    expected.extend((relay..=relay + 2).map(|p| (format!("{p}/udp"), vec![p.to_string()])));
    assert_eq!(published, expected);

    let broker = format!("kdeploy-{c}-broker-live");
    let password = s.attr("broker.live", "admin_password").as_str().expect("a generated password").to_string();
    let env: BTreeMap<String, String> =
        testing::env(&format!("kdeploy-{c}-agent-cam")).iter().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(env["AGENT_MQTT_URI"], format!("tcp://{broker}:1883"));
    assert_eq!(env["AGENT_MQTT_USERNAME"], "kerberos");
    assert_eq!(env["AGENT_MQTT_PASSWORD"], password);
    assert_eq!(env["AGENT_TURN_URI"], format!("turn:kdeploy-{c}-turn-relay:3478"));
    let vault = testing::env(&format!("kdeploy-{c}-vault-main")).into_iter().find_map(|kv| kv.strip_prefix("VAULT_INTEGRATIONS=").map(str::to_string)).unwrap();
    assert!(vault.contains(&format!("\"broker\":\"kdeploy-{c}-broker-stream:9092\"")) && vault.contains("\"queue\":\"kafka\""), "{vault}");
    assert_eq!(env["AGENT_TURN_PASSWORD"], s.attr("turn.relay", "admin_password").as_str().unwrap());
    assert_eq!(s.attr("broker.live", "external_uri"), serde_json::json!(format!("tcp://localhost:{mqtt_port}")));
    assert_eq!(s.attr("broker.live", "external_websocket_uri"), serde_json::json!(format!("ws://localhost:{ws_port}")));
    let r = kdeploy(s.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "a second plan changes nothing:\n{}{}", r.stdout, r.stderr);

    let conf = testing::read_file(&broker, kdeploy_provider::components::mqtt::CONFIG_PATH).expect("the configuration in the container");
    let passwd = testing::read_file(&broker, kdeploy_provider::components::mqtt::PASSWORD_FILE_PATH).expect("the password file in the container");
    real_mosquitto(&conf, &passwd, "kerberos", &password);
    ok(&kdeploy(s.path(), &["destroy", "--auto-approve", "--delete-data"]));
}

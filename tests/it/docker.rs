//! The Docker provider against the real engine, through the CLI. The machines have an engine
//! but no registry: the tests import a busybox image (kdeploy_provider_docker::testing) and run
//! every component as a busybox httpd through the stack's image/command/healthcheck overrides.
//! Without an engine the tests are skipped (they fail instead when CI is set).
#![cfg(feature = "docker")]

use std::collections::BTreeMap;
use std::path::Path;

use kdeploy::providers::Providers;
use kdeploy_provider_docker::testing;

use crate::support::{Run, TestStack, run_with};

/// The image with busybox and the stand-ins (set by [`engine`]).
static STANDIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// True when the engine is usable; prints why and returns false when not (panics under CI).
/// Builds the test images on first use.
pub fn engine() -> bool {
    if let Err(e) = testing::engine_available() {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but no Docker engine is reachable: {e}");
        }
        eprintln!("skipping: no Docker engine reachable ({e})");
        return false;
    }
    testing::ensure_test_image().expect("build the busybox test image");
    let image = testing::ensure_standin_image().expect("build the stand-in image");
    let _ = STANDIN.set(image);
    true
}

/// The stand-in image (after [`engine`]).
pub fn standin_image() -> &'static str {
    STANDIN.get().map(String::as_str).expect("engine() was called")
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port()
}

/// Removes the cluster's objects at the start and end of a test.
pub struct Cleanup(pub String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        testing::cleanup(&self.0);
    }
}

/// What a component runs as on the test engine: the stand-in image, a command that serves what
/// kdeploy and the other components use (MinIO's bucket API, RabbitMQ's management API, Vault),
/// and a health check on it.
pub fn overrides(kind: &str) -> String {
    let image = standin_image();
    let (command, port, extra) = match kind {
        "object_storage" => (r#"["kdeploy-standin", "s3", "--data", "/data"]"#.to_string(), 9000, format!("  client_image      = \"{image}\"\n")),
        "broker" => (r#"["kdeploy-standin", "rabbitmq", "--data", "/var/lib/rabbitmq"]"#.to_string(), 15672, String::new()),
        "vault" => (r#"["kdeploy-standin", "vault"]"#.to_string(), 80, String::new()),
        "database" => (r#"["/bin/busybox", "httpd", "-f", "-p", "27017", "-h", "/www"]"#.to_string(), 27017, String::new()),
        _ => (r#"["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"]"#.to_string(), 80, String::new()),
    };
    format!(
        r#"  image             = "{image}"
  command           = {command}
  healthcheck       = ["CMD", "/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:{port}/api/health"]
  readiness_timeout = "90s"
{extra}"#
    )
}

/// A Docker cluster with the MongoDB (`database.meta`) and MinIO (`object_storage.rec`) every
/// Docker test stack runs, as stand-ins.
pub fn core_blocks(cluster: &str) -> String {
    format!(
        "cluster \"{cluster}\" {{\n  type = \"docker\"\n}}\n\ndatabase \"meta\" {{\n  type = \"mongodb\"\n{}}}\n\nobject_storage \"rec\" {{\n  type = \"minio\"\n{}}}\n",
        overrides("database"),
        overrides("object_storage")
    )
}

fn stack(cluster: &str, port: u16, cams: &[(&str, &str)]) -> String {
    let cams: Vec<String> = cams.iter().map(|(k, v)| format!("    {k} = \"{v}\"")).collect();
    format!(
        r#"stack "dockertest" {{}}

variable "cameras" {{
  type = map(string)
  default = {{
{cams}
  }}
}}

{core}
broker "events" {{
  type = "rabbitmq"
{broker}}}

vault "main" {{
  database  = database.meta
  storage   = object_storage.rec
  broker    = broker.events
  node_port = {port}
{vault}}}

agent "cam" {{
  for_each    = var.cameras
  vault       = vault.main
  rtsp_url    = each.value
  persistence = true
{agent}}}

output "vault_url" {{
  value = vault.main.url
}}

output "vault_access_key" {{
  value     = vault.main.access_key
  sensitive = true
}}
"#,
        cams = cams.join("\n"),
        core = core_blocks(cluster),
        broker = overrides("broker"),
        vault = overrides("vault"),
        agent = overrides("agent"),
    )
}

fn kd(dir: &Path, args: &[&str]) -> Run {
    run_with(dir, Providers::builtin(), args, BTreeMap::new(), "")
}

fn ok(r: &Run) {
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
}

fn name(cluster: &str, slug: &str) -> String {
    format!("kdeploy-{cluster}-{slug}")
}

fn secrets_of(s: &TestStack) -> Vec<String> {
    let state = s.state();
    let mut out = Vec::new();
    for r in &state.resources {
        for k in ["admin_password", "secret_key", "access_key"] {
            if let Some(v) = r.attributes.get(k).and_then(|v| v.as_str()) {
                out.push(v.to_string());
            }
        }
    }
    out
}

fn assert_no_secrets(s: &TestStack, r: &Run) {
    for secret in secrets_of(s) {
        assert!(!r.stdout.contains(&secret) && !r.stderr.contains(&secret), "a secret was printed:\n{}{}", r.stdout, r.stderr);
    }
}

const CAMS: &[(&str, &str)] = &[("front", "rtsp://10.0.0.1/s1"), ("back", "rtsp://10.0.0.2/s1")];

#[test]
fn docker_apply_plan_replace_cameras_destroy() {
    if !engine() {
        return;
    }
    let c = unique("kdt");
    testing::cleanup(&c);
    let _guard = Cleanup(c.clone());
    let port = free_port();
    let s = TestStack::new(&[("main.hcl", &stack(&c, port, CAMS))]);

    // Apply from empty: everything running and healthy, network and volumes present.
    let r = kd(s.path(), &["apply", "--auto-approve"]);
    ok(&r);
    assert_no_secrets(&s, &r);
    let objs = testing::objects(&c).unwrap();
    let expected = ["agent-cam-back", "agent-cam-front", "broker-events", "database-meta", "object-storage-rec", "vault-main"];
    let names: Vec<String> = objs.containers.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, expected.iter().map(|e| name(&c, e)).collect::<Vec<_>>());
    assert!(objs.containers.iter().all(|(_, running)| *running), "{objs:?}");
    for e in expected {
        assert_eq!(testing::health(&name(&c, e)).as_deref(), Some("healthy"), "{e}");
    }
    assert_eq!(objs.networks, vec![format!("kdeploy-{c}")]);
    for v in ["agent-cam-back-config", "agent-cam-front-recordings", "broker-events-data", "database-meta-data", "object-storage-rec-data"] {
        assert!(objs.volumes.contains(&name(&c, v)), "{v} missing in {:?}", objs.volumes);
    }
    // Generated credentials reach the containers' env, and the state marks them sensitive.
    let state = s.state();
    let db = state.resource(&"database.meta".parse().unwrap()).unwrap();
    let pw = db.attributes["admin_password"].as_str().unwrap().to_string();
    assert!(pw.len() >= 32);
    assert!(db.sensitive_paths.iter().any(|p| p.to_string() == "admin_password"));
    assert!(testing::env(&name(&c, "vault-main")).contains(&format!("MONGODB_PASSWORD={pw}")));
    assert!(testing::env(&name(&c, "vault-main")).contains(&format!("MONGODB_HOST={}", name(&c, "database-meta"))));
    let vault_secret = state.resource(&"vault.main".parse().unwrap()).unwrap().attributes["secret_key"].as_str().unwrap().to_string();
    let agent_env = testing::env(&name(&c, "agent-cam-front"));
    assert!(agent_env.contains(&format!("AGENT_KERBEROSVAULT_SECRET_KEY={vault_secret}")));
    assert!(agent_env.contains(&"AGENT_NAME=front".to_string()));
    assert!(agent_env.contains(&"AGENT_MQTT_URI=".to_string()));
    assert!(agent_env.contains(&format!("AGENT_KERBEROSVAULT_URI=http://{}:80/api", name(&c, "vault-main"))));
    assert_eq!(state.outputs["vault_url"].value, serde_json::json!(format!("http://localhost:{port}")));
    // The vault's published port answers, and its account was checked there.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(r.stdout.contains(&format!("vault.main: account \"kdeploy\" verified (POST /api/ping answered 200 at http://localhost:{port}).")), "{}", r.stdout);
    // The one-shot steps ran against the running components: the bucket and the queue exist.
    assert_eq!(testing::read_file(&name(&c, "object-storage-rec"), "/data/.kdeploy-buckets").as_deref(), Some("recordings\n"));
    assert_eq!(testing::read_file(&name(&c, "broker-events"), "/var/lib/rabbitmq/.kdeploy-queues").as_deref(), Some("data-filtering\n"));
    // Agents upload under a concrete folder (the stack's name), with a generated web login.
    assert!(agent_env.contains(&"AGENT_KERBEROSVAULT_DIRECTORY=dockertest".to_string()), "{agent_env:?}");
    let agent_pw = state.resource(&"agent.cam[\"front\"]".parse().unwrap()).unwrap().attributes["admin_password"].as_str().unwrap().to_string();
    assert!(
        agent_pw.len() >= 32 && agent_env.contains(&format!("AGENT_PASSWORD={agent_pw}")) && agent_env.contains(&"AGENT_USERNAME=admin".to_string()),
        "{agent_env:?}"
    );

    // Plan again: no changes.
    let r = kd(s.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("No changes."), "{}", r.stdout);
    assert_no_secrets(&s, &r);

    // Change one camera's RTSP URL: that one container is replaced.
    let ids: BTreeMap<&str, String> = expected.iter().map(|e| (*e, testing::container_id(&name(&c, e)).unwrap())).collect();
    s.write("main.hcl", &stack(&c, port, &[("front", "rtsp://10.0.0.9/s1"), ("back", "rtsp://10.0.0.2/s1")]));
    let r = kd(s.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("# agent.cam[\"front\"] must be replaced"), "{}", r.stdout);
    assert!(r.stdout.contains("Plan: 1 to add, 0 to change, 1 to destroy."), "{}", r.stdout);
    let r = kd(s.path(), &["apply", "--auto-approve"]);
    ok(&r);
    for e in expected {
        let now = testing::container_id(&name(&c, e)).unwrap();
        assert_eq!(now != ids[e], e == "agent-cam-front", "{e}");
    }
    assert!(testing::env(&name(&c, "agent-cam-front")).contains(&"AGENT_CAPTURE_IPCAMERA_RTSP=rtsp://10.0.0.9/s1".to_string()));
    let r = kd(s.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);

    // Add one camera, remove another.
    s.write("main.hcl", &stack(&c, port, &[("front", "rtsp://10.0.0.9/s1"), ("yard", "rtsp://10.0.0.3/s1")]));
    let r = kd(s.path(), &["apply", "--auto-approve"]);
    ok(&r);
    let objs = testing::objects(&c).unwrap();
    assert_eq!(objs.container(&name(&c, "agent-cam-yard")), Some(true));
    assert_eq!(objs.container(&name(&c, "agent-cam-back")), None);
    let r = kd(s.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);

    // Destroy: containers and network gone, volumes kept.
    let r = kd(s.path(), &["destroy", "--auto-approve"]);
    ok(&r);
    let objs = testing::objects(&c).unwrap();
    assert!(objs.containers.is_empty(), "{objs:?}");
    assert!(objs.networks.is_empty(), "{objs:?}");
    assert!(objs.volumes.contains(&name(&c, "database-meta-data")), "{objs:?}");
    assert!(s.state().resources.is_empty());
}

#[test]
fn docker_drift_is_reported_and_repaired_and_delete_data_removes_volumes() {
    if !engine() {
        return;
    }
    let c = unique("kdd");
    testing::cleanup(&c);
    let _guard = Cleanup(c.clone());
    let port = free_port();
    let s = TestStack::new(&[("main.hcl", &stack(&c, port, &[("front", "rtsp://10.0.0.1/s1")]))]);
    ok(&kd(s.path(), &["apply", "--auto-approve"]));
    let pw = s.state().resource(&"database.meta".parse().unwrap()).unwrap().attributes["admin_password"].as_str().unwrap().to_string();
    // Right after apply: no drift (Docker's own labels and defaults are not drift).
    let r = kd(s.path(), &["drift", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.starts_with("No drift: the "), "{}", r.stdout);

    // docker rm -f: drift reported, apply recreates it.
    let agent = name(&c, "agent-cam-front");
    testing::remove(&agent).unwrap();
    let r = kd(s.path(), &["drift", "--detailed-exitcode"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("  agent.cam[\"front\"] (agent kerberos): deleted outside kdeploy\n"), "{}", r.stdout);
    let r = kd(s.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("# agent.cam[\"front\"] has been deleted"), "{}", r.stdout);
    assert!(r.stdout.contains("# agent.cam[\"front\"] will be created"), "{}", r.stdout);
    ok(&kd(s.path(), &["apply", "--auto-approve"]));
    assert_eq!(testing::objects(&c).unwrap().container(&agent), Some(true));
    assert_eq!(kd(s.path(), &["plan", "--detailed-exitcode"]).code, 0);

    // docker rm -f of the database: recreated with the same (generated once) password.
    let db = name(&c, "database-meta");
    testing::remove(&db).unwrap();
    ok(&kd(s.path(), &["apply", "--auto-approve"]));
    assert!(testing::env(&db).contains(&format!("MONGO_INITDB_ROOT_PASSWORD={pw}")));
    assert_eq!(s.state().resource(&"database.meta".parse().unwrap()).unwrap().attributes["admin_password"].as_str(), Some(pw.as_str()));
    assert_eq!(kd(s.path(), &["plan", "--detailed-exitcode"]).code, 0);

    // docker stop: drift reported, apply starts it again (same container).
    let vault = name(&c, "vault-main");
    let id = testing::container_id(&vault).unwrap();
    testing::stop(&vault).unwrap();
    let r = kd(s.path(), &["drift", "--detailed-exitcode"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("  vault.main (vault kerberos): changed outside kdeploy\n      ~ running = true -> false\n"), "{}", r.stdout);
    let r = kd(s.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("# vault.main has changed"), "{}", r.stdout);
    assert!(r.stdout.contains("# vault.main will be updated in place"), "{}", r.stdout);
    ok(&kd(s.path(), &["apply", "--auto-approve"]));
    assert_eq!(testing::objects(&c).unwrap().container(&vault), Some(true));
    assert_eq!(testing::container_id(&vault), Some(id));
    assert_eq!(kd(s.path(), &["plan", "--detailed-exitcode"]).code, 0);

    // destroy --delete-data: volumes go too.
    ok(&kd(s.path(), &["destroy", "--auto-approve", "--delete-data"]));
    let objs = testing::objects(&c).unwrap();
    assert!(objs.containers.is_empty() && objs.networks.is_empty() && objs.volumes.is_empty(), "{objs:?}");
}

#[test]
fn docker_port_in_use_and_unsupported_kinds_are_clear_errors() {
    if !engine() {
        return;
    }
    let c = unique("kdp");
    testing::cleanup(&c);
    let _guard = Cleanup(c.clone());
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let s = TestStack::new(&[("main.hcl", &stack(&c, port, &[("front", "rtsp://10.0.0.1/s1")]))]);
    let r = kd(s.path(), &["apply", "--auto-approve"]);
    assert_ne!(r.code, 0);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("already in use") || all.contains("already allocated"), "{all}");
    assert!(all.contains("node_port"), "{all}");
    assert_no_secrets(&s, &r);
    // State stays consistent: vault is not recorded, its dependencies are.
    let state = s.state();
    assert!(state.resource(&"vault.main".parse().unwrap()).is_none());
    assert!(state.resource(&"database.meta".parse().unwrap()).is_some());
    assert_eq!(testing::objects(&c).unwrap().container(&name(&c, "vault-main")), None);
    drop(listener);
    ok(&kd(s.path(), &["apply", "--auto-approve"]));
    ok(&kd(s.path(), &["destroy", "--auto-approve", "--delete-data"]));

    // A hub on a Docker cluster: a clear error at plan time.
    let hub = format!(
        "{}\nhub \"main\" {{\n  database = database.meta\n  broker = broker.events\n  vault = vault.main\n  license = \"x\"\n}}\n",
        stack(&c, port, &[("front", "rtsp://10.0.0.1/s1")])
    );
    s.write("main.hcl", &hub);
    let r = kd(s.path(), &["plan"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("cannot run on a Docker cluster"), "{}{}", r.stdout, r.stderr);
}

#[test]
fn daemon_not_running_is_a_clear_error_and_nothing_is_written() {
    // No engine needed: the engine is missing on purpose.
    for (host, expect) in [
        ("unix:///tmp/kdeploy-no-such-docker.sock", "the socket /tmp/kdeploy-no-such-docker.sock does not exist. Is Docker installed and running?"),
        ("tcp://127.0.0.1:1", "cannot reach the Docker engine at tcp://127.0.0.1:1"),
    ] {
        let s = crate::support::TestStack::new(&[(
            "main.hcl",
            &format!("cluster \"edge\" {{\n  type = \"docker\"\n  host = \"{host}\"\n}}\n\ndatabase \"meta\" {{\n  type = \"mongodb\"\n}}\n"),
        )]);
        let r = crate::support::run_with(s.path(), kdeploy::providers::Providers::builtin(), &["apply", "--auto-approve"], Default::default(), "");
        assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("error: Cluster not ready"), "{}", r.stderr);
        assert!(r.stderr.contains(expect), "{}", r.stderr);
        assert!(r.stderr.contains("systemctl start docker"), "says how to fix it: {}", r.stderr);
        assert!(!r.stderr.contains("cluster.edge: cluster.edge:"), "{}", r.stderr);
        assert!(!s.state_path().exists(), "nothing written");
    }
}

#[test]
fn a_duplicate_network_left_by_a_killed_run_is_removed_not_fatal() {
    if !engine() {
        return;
    }
    let c = unique("kdn");
    testing::cleanup(&c);
    let _guard = Cleanup(c.clone());
    let s = TestStack::new(&[("main.hcl", &stack(&c, free_port(), &[("front", "rtsp://10.0.0.1/s1")]))]);
    let r = crate::support::run_binary(s.path(), &[], &["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let network = format!("kdeploy-{c}");
    if !testing::create_duplicate_network(&network, &c).unwrap() {
        eprintln!("skipping the rest: this engine (API 1.44 or later) refuses a second network of the same name");
        return;
    }
    assert_eq!(testing::objects(&c).unwrap().networks, [network.clone(), network.clone()]);
    // A new camera's container joins the network by name: the duplicate must not make it ambiguous.
    s.write("main.hcl", &stack(&c, free_port(), &[("front", "rtsp://10.0.0.1/s1"), ("back", "rtsp://10.0.0.2/s1")]));
    let r = crate::support::run_binary(s.path(), &[], &["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(testing::objects(&c).unwrap().networks, std::slice::from_ref(&network), "the unused duplicate is removed");
    // Destroy removes every network of the name, even if a duplicate came back.
    assert!(testing::create_duplicate_network(&network, &c).unwrap());
    let r = crate::support::run_binary(s.path(), &[], &["destroy", "-auto-approve", "-delete-data"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let left = testing::objects(&c).unwrap();
    assert!(left.networks.is_empty() && left.containers.is_empty() && left.volumes.is_empty(), "{left:?}");
}

/// `docker` with these arguments; its stdout.
fn docker_cli(args: &[&str]) -> String {
    let out = std::process::Command::new("docker").args(args).output().expect("run docker");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes what the test started with `docker run` (not labelled, so not in [`Cleanup`]).
struct Unmanaged(String, String);
impl Drop for Unmanaged {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker").args(["rm", "-f", &self.0]).output();
        let _ = std::process::Command::new("docker").args(["volume", "rm", "-f", &self.1]).output();
    }
}

#[test]
fn docker_run_container_is_adopted_by_name_and_replaced_keeping_its_volume() {
    if !engine() {
        return;
    }
    let c = unique("kdi");
    let (started, volume) = (unique("mongodb-"), unique("mongodb-data-"));
    testing::cleanup(&c);
    let _guard = Cleanup(c.clone());
    let _unmanaged = Unmanaged(started.clone(), volume.clone());
    // The guide's way: docker run --name, a named volume for the data.
    let image = standin_image();
    // Its data was set up with the root password it was started with.
    #[rustfmt::skip]
    docker_cli(&["run", "-d", "--name", &started, "-v", &format!("{volume}:/data/db"), "-e", "MONGO_INITDB_ROOT_PASSWORD=guide-root-password",
        image, "/bin/busybox", "httpd", "-f", "-p", "27017", "-h", "/www"]);
    docker_cli(&["exec", &started, "/bin/busybox", "sh", "-c", "echo recorded-before > /data/db/marker"]);
    let stack = format!(
        "stack \"adopt\" {{}}\n\ncluster \"{c}\" {{\n  type = \"docker\"\n}}\n\ndatabase \"meta\" {{\n  type = \"mongodb\"\n{}}}\n\nimport {{\n  to = database.meta\n  id = \"{started}\"\n}}\n",
        overrides("database")
    );
    let s = TestStack::new(&[("main.hcl", &stack)]);

    // Its labels cannot change: the plan says why, at the block, and replaces nothing.
    let r = kd(s.path(), &["plan"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("Import needs a replacement") && r.stderr.contains("labels") && r.stderr.contains("-replace=database.meta"), "{}", r.stderr);
    assert!(r.stderr.contains("main.hcl:"), "{}", r.stderr);
    // Confirmed with -replace: the new container re-attaches the volume, the old one is gone.
    let r = kd(s.path(), &["plan", "-replace=database.meta"]);
    ok(&r);
    assert!(r.stdout.contains("database.meta") && r.stdout.contains("replaced"), "{}", r.stdout);
    ok(&kd(s.path(), &["apply", "--auto-approve", "-replace=database.meta"]));
    let new = name(&c, "database-meta");
    assert_eq!(testing::read_file(&new, "/data/db/marker").as_deref(), Some("recorded-before\n"));
    // The replacement keeps that password (a new one would lock Vault out of the old data).
    assert!(testing::env(&new).iter().any(|e| e == "MONGO_INITDB_ROOT_PASSWORD=guide-root-password"), "{:?}", testing::env(&new));
    assert!(testing::container_id(&started).is_none(), "the adopted container was not removed");
    assert!(docker_cli(&["volume", "ls", "-q"]).lines().any(|v| v == volume), "the adopted volume was deleted");
    let adopted = s.attr("database.meta", "adopted");
    assert_eq!(adopted["name"], serde_json::json!(started), "{adopted}");
    // Re-plan: nothing left to do.
    let r = kd(s.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("No changes."), "{}", r.stdout);
}

#[test]
fn a_docker_run_containers_environment_is_read_as_a_data_source() {
    if !engine() {
        return;
    }
    let c = unique("kdd");
    let started = unique("mongodb-");
    testing::cleanup(&c);
    let _guard = Cleanup(c.clone());
    let _unmanaged = Unmanaged(started.clone(), String::new());
    #[rustfmt::skip]
    docker_cli(&["run", "-d", "--name", &started, "-e", "MONGO_INITDB_ROOT_PASSWORD=guide-root-password", standin_image(),
        "/bin/busybox", "httpd", "-f", "-p", "27017", "-h", "/www"]);
    let stack = format!(
        "cluster \"{c}\" {{\n  type = \"docker\"\n}}\n\ndata \"docker_container_env\" \"mongo\" {{\n  container = \"{started}\"\n}}\n\ndatabase \"meta\" {{\n  type = \"external\"\n  uri  = \"mongodb://root:${{data.docker_container_env.mongo.env[\"MONGO_INITDB_ROOT_PASSWORD\"]}}@{started}:27017/admin\"\n}}\n"
    );
    let s = TestStack::new(&[("main.hcl", &stack)]);
    let r = kd(s.path(), &["plan"]);
    ok(&r);
    assert!(r.stdout.contains("(sensitive value)") && !r.stdout.contains("guide-root-password"), "{}", r.stdout);
    ok(&kd(s.path(), &["apply", "--auto-approve"]));
    assert_eq!(s.attr("database.meta", "uri"), serde_json::json!(format!("mongodb://root:guide-root-password@{started}:27017/admin")));
    let r = kd(s.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);

    // A container that is not there is reported at the block.
    s.write("main.hcl", &stack.replace(&format!("container = \"{started}\""), "container = \"no-such-container\""));
    let r = kd(s.path(), &["plan"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("Data source not found") && r.stderr.contains("container \"no-such-container\"") && r.stderr.contains("main.hcl:5"),
        "{}",
        r.stderr
    );
}

/// Removes containers and image tags a test made with the docker CLI.
struct Started(Vec<String>, Vec<String>);
impl Drop for Started {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = std::process::Command::new("docker").args(["rm", "-f", c]).output();
        }
        for i in &self.1 {
            let _ = std::process::Command::new("docker").args(["rmi", i]).output();
        }
    }
}

#[test]
fn docker_run_containers_under_the_reference_names_are_discovered() {
    if !engine() {
        return;
    }
    let c = unique("kdo");
    testing::cleanup(&c);
    let _guard = Cleanup(c.clone());
    // The guide's images, as local tags of the stand-in image (the machines have no registry).
    let tag = unique("t");
    let images = [
        format!("kdeploy-test/mongo:{tag}"),
        format!("kdeploy-test/uug-ai/vault:{tag}"),
        format!("kdeploy-test/kerberos/agent:{tag}"),
        format!("kdeploy-test/uug-ai/factory:{tag}"),
    ];
    let names = [unique("mongodb-"), unique("vault-"), unique("agent1-"), unique("factory-")];
    let _started = Started(names.to_vec(), images.to_vec());
    for i in &images {
        docker_cli(&["tag", standin_image(), i]);
    }
    let envs: [&[&str]; 4] = [
        &["-e", "MONGO_INITDB_ROOT_USERNAME=root", "-e", "MONGO_INITDB_ROOT_PASSWORD=guide-root-password"],
        &["-e", "GIN_MODE=release"],
        &["-e", "AGENT_NAME=agent1", "-e", "AGENT_CAPTURE_IPCAMERA_RTSP=rtsp://10.0.0.1/s1"],
        &["-e", "FACTORY_ENGINE=docker", "-e", "KERBEROS_LOGIN_PASSWORD=guide-factory-password"],
    ];
    for ((name, image), env) in names.iter().zip(&images).zip(envs) {
        let mut args = vec!["run", "-d", "--name", name.as_str()];
        args.extend(env);
        args.extend([image.as_str(), "/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"]);
        docker_cli(&args);
    }
    let s = TestStack::new(&[("main.hcl", &format!("cluster \"{c}\" {{\n  type = \"docker\"\n}}\n"))]);
    let r = kd(s.path(), &["adopt", "--cluster", &c, "-out", "adopted.hcl"]);
    ok(&r);
    let hcl = std::fs::read_to_string(s.path().join("adopted.hcl")).unwrap();
    assert!(!hcl.contains("guide-root-password"), "a password was copied:\n{hcl}");
    let (mongo, vault, agent, factory) = (&names[0], &names[1], &names[2], &names[3]);
    // Factory runs on Kubernetes only as kdeploy runs it: found, and skipped saying so.
    let skipped = format!("Skipped {factory} (factory): kdeploy runs Kerberos Factory on Kubernetes only");
    assert!(r.stderr.contains(&skipped), "{skipped}\n{}", r.stderr);
    assert!(!hcl.contains("factory"), "{hcl}");
    for text in [
        format!("data \"docker_container_env\" \"{}\"", mongo.replace('-', "_")),
        "env[\"MONGO_INITDB_ROOT_PASSWORD\"]".to_string(),
        format!("id = \"{vault}\""),
        format!("id = \"{agent}\""),
        "rtsp_url    = \"rtsp://10.0.0.1/s1\"".to_string(),
    ] {
        assert!(hcl.contains(&text), "{text}\n{hcl}");
    }
    ok(&kd(s.path(), &["validate"]));
    ok(&kd(s.path(), &["fmt", "-check"]));
}

//! From zero to recording with one `kdeploy apply`, through the real binary: the examples are
//! applied with their images and commands replaced by stand-ins (an override file, as a user
//! would write one), and every Vault account is checked after apply by a Vault stand-in as
//! strict as Vault's documentation. Also the two ways the declarative configuration fails:
//! Vault refuses its definitions (it never starts), or its image predates them (it starts but
//! does not know the account).
#![cfg(all(feature = "docker", feature = "kubernetes"))]

use std::collections::BTreeMap;

use base64::Engine as _;
use kdeploy_kube_testserver::{Options, TestServer};
use kdeploy_provider_docker::testing;
use kdeploy_standins::vault::Release;
use serde_json::json;

use crate::docker::{Cleanup, engine, free_port, overrides, standin_image};
use crate::support::{TestStack, central_services, example, run_binary, vault_standin};

/// The override file that runs the Docker example's components as stand-ins.
pub(crate) fn docker_override(port: u16) -> String {
    format!(
        "database \"meta\" {{\n{}}}\n\nobject_storage \"recordings\" {{\n{}}}\n\nbroker \"events\" {{\n{}}}\n\nvault \"main\" {{\n  node_port = {port}\n{}}}\n\nagent \"cam\" {{\n{}}}\n",
        overrides("database"),
        overrides("object_storage"),
        overrides("broker"),
        overrides("vault"),
        overrides("agent"),
    )
}

fn env_value(container: &str, var: &str) -> Option<String> {
    testing::env(container).into_iter().find_map(|e| e.strip_prefix(&format!("{var}=")).map(str::to_string))
}

#[test]
fn the_docker_example_records_after_one_apply() {
    if !engine() {
        return;
    }
    // The example's cluster is `edge`: its containers are kdeploy-edge-*.
    testing::cleanup("edge");
    let _guard = Cleanup("edge".into());
    let port = free_port();
    let s = example("docker");
    s.write("test_override.hcl", &docker_override(port));
    let r = run_binary(s.path(), &[], &["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains(&format!("vault.main: account \"kdeploy\" verified (POST /api/ping answered 200 at http://localhost:{port}).")), "{}", r.text());
    assert!(r.stdout.contains("Apply complete! Resources: 8 added"), "{}", r.text());

    // No UI step was needed: MinIO has its bucket, RabbitMQ its queue, Vault its account.
    assert_eq!(testing::read_file("kdeploy-edge-object-storage-recordings", "/data/.kdeploy-buckets").as_deref(), Some("recordings\n"));
    assert_eq!(testing::read_file("kdeploy-edge-broker-events", "/var/lib/rabbitmq/.kdeploy-queues").as_deref(), Some("data-filtering\n"));
    let accounts: serde_json::Value = serde_json::from_str(&env_value("kdeploy-edge-vault-main", "VAULT_ACCOUNTS").expect("VAULT_ACCOUNTS")).unwrap();
    let access_key = s.attr("vault.main", "access_key");
    assert_eq!(accounts[0]["account"], "kdeploy");
    assert_eq!(accounts[0]["access_key"], access_key);
    assert_eq!(accounts[0]["queues"], json!(["events"]), "the broker's integration");
    let providers: serde_json::Value = serde_json::from_str(&env_value("kdeploy-edge-vault-main", "VAULT_STORAGE_PROVIDERS").unwrap()).unwrap();
    assert_eq!(providers[0]["host"], "kdeploy-edge-object-storage-recordings:9000");
    // Every agent uploads with the account's keys under a concrete folder: the stack's name.
    for cam in ["front", "back", "yard"] {
        let c = format!("kdeploy-edge-agent-cam-{cam}");
        assert_eq!(env_value(&c, "AGENT_KERBEROSVAULT_DIRECTORY").as_deref(), Some("edge-docker"), "{cam}");
        assert_eq!(env_value(&c, "AGENT_KERBEROSVAULT_ACCESS_KEY").as_deref(), access_key.as_str(), "{cam}");
        assert_ne!(env_value(&c, "AGENT_PASSWORD").as_deref(), Some("root"), "{cam}");
    }
    assert_eq!(s.attr("agent.cam[\"front\"]", "upload_directory"), "edge-docker");

    // The next plan checks the accounts again and changes nothing.
    let r = run_binary(s.path(), &[], &["plan", "-detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("Status: vault.main: account \"kdeploy\" verified"), "{}", r.text());
    let r = run_binary(s.path(), &[], &["destroy", "-auto-approve", "-delete-data"]);
    assert_eq!(r.code, 0, "{}", r.text());
}

/// A Vault on Docker with an external database and storage (so it is the only container).
fn lone_vault(cluster: &str, port: u16, command: &str, extra: &str) -> String {
    let image = standin_image();
    format!(
        r#"stack "lone" {{}}

cluster "{cluster}" {{
  type = "docker"
}}

database "ext" {{
  type   = "external"
  uri    = "mongodb://u:p@docdb.example.com:27017/admin"
  flavor = "documentdb"
  tls_ca = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"
}}

object_storage "ceph" {{
  type       = "external"
  endpoint   = "ceph.example.com:7480"
  bucket     = "recordings"
  access_key = "AK"
  secret_key = "SK"
}}

vault "main" {{
  database          = database.ext
  storage           = object_storage.ceph
  node_port         = {port}
  image             = "{image}"
  command           = {command}
  healthcheck       = ["CMD", "/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:80/api/health"]
  readiness_timeout = "12s"
{extra}}}
"#
    )
}

#[test]
fn a_docker_vault_that_refuses_or_ignores_its_definitions_is_explained() {
    if !engine() {
        return;
    }
    let c = format!("kdv{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    testing::cleanup(&c);
    let _guard = Cleanup(c.clone());
    let port = free_port();
    // A Vault release without AWS support refuses the aws provider: it never starts.
    let archive = "  provider \"archive\" {\n    type       = \"aws\"\n    bucket     = \"archive\"\n    region     = \"eu-west-1\"\n    access_key = \"A2\"\n    secret_key = \"S2\"\n  }\n";
    let s = TestStack::new(&[("main.hcl", &lone_vault(&c, port, r#"["kdeploy-standin", "vault", "--without-providers", "aws"]"#, archive))]);
    let r = run_binary(s.path(), &[], &["apply", "-auto-approve"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("was not ready within 12s"), "{}", r.text());
    assert!(r.stderr.contains("unsupported provider \"aws\""), "Vault's own words from its log: {}", r.text());
    assert!(r.stderr.contains("Vault did not start. Vault refuses to start when VAULT_STORAGE_PROVIDERS"), "{}", r.text());
    assert!(!r.stderr.contains("SK") || !r.stderr.contains("secret"), "{}", r.text());

    // An image that predates the variables starts, but does not know the account.
    s.write("main.hcl", &lone_vault(&c, port, r#"["kdeploy-standin", "vault", "--ignore-variables"]"#, ""));
    let r = run_binary(s.path(), &[], &["apply", "-auto-approve"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("Apply complete, but the deployment does not work yet: 1 of 1 checks failed."), "{}", r.text());
    assert!(r.stderr.contains("Vault runs but does not know the account \"kdeploy\" (POST /api/ping answered 403"), "{}", r.text());
    assert!(r.stderr.contains(&format!("The image {} may predate the VAULT_* variables", standin_image())), "names the image: {}", r.text());
    assert!(r.stderr.contains("open the Vault UI at http://localhost:"), "the fallback: {}", r.text());
    assert!(s.state().resource(&"vault.main".parse().unwrap()).is_some(), "what was applied is recorded");
    // DocumentDB: TLS with the CA bundle copied into the container (no bind mount: works with
    // remote engines), retryable writes off.
    let vault = format!("kdeploy-{c}-vault-main");
    assert_eq!(testing::read_file(&vault, "/certs/ca.pem").as_deref(), Some("-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"));
    for (var, value) in [("MONGODB_TLS", "true"), ("MONGODB_TLS_CA_FILE", "/certs/ca.pem"), ("MONGODB_RETRY_WRITES", "false"), ("MONGODB_FLAVOR", "documentdb")]
    {
        assert_eq!(env_value(&vault, var).as_deref(), Some(value), "{var}");
    }
    // The cron sees it too.
    let r = run_binary(s.path(), &[], &["drift", "-detailed-exitcode", "-json"]);
    assert_eq!(r.code, 2, "{}", r.text());
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["summary"]["unhealthy"], 1, "{}", r.stdout);
    assert_eq!(j["drift"][0]["status"], "unhealthy");
    let r = run_binary(s.path(), &[], &["destroy", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
}

struct Cluster {
    server: TestServer,
    kubeconfig: String,
    s: TestStack,
}

fn cluster(example_name: &str, release: Release) -> Cluster {
    let server = TestServer::start(Options { storage_classes: vec![("microk8s-hostpath".into(), true)], ..Options::default() });
    vault_standin(&server, "kerberos-vault", "vault-main", release);
    // MicroK8s' DNS add-on, as `microk8s enable dns` leaves it.
    server.put_object(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", "namespace": "kube-system"}, "spec": {"ports": [{"port": 53, "protocol": "UDP"}], "selector": {"k8s-app": "kube-dns"}}}));
    let s = example(example_name);
    let kubeconfig = server.write_kubeconfig(s.path(), "test").display().to_string();
    Cluster { server, kubeconfig, s }
}

impl Cluster {
    fn run(&self, args: &[&str]) -> crate::support::Out {
        let kc = format!("kubeconfig={}", self.kubeconfig);
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-var", &kc, "-var", "context=test"]);
        run_binary(self.s.path(), &[], &all)
    }

    fn vault_secret(&self) -> BTreeMap<String, String> {
        let secret = self.server.object("v1", "Secret", Some("kerberos-vault"), "vault-main").expect("vault secret");
        secret["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8(base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap()).unwrap()))
            .collect()
    }
}

#[test]
fn the_kubernetes_examples_record_after_one_apply_and_report_an_account_that_stops_answering() {
    for (name, stack) in [("kubernetes", "kubernetes"), ("microk8s", "edge-microk8s")] {
        let c = cluster(name, Release::Current);
        let r = c.run(&["apply", "-auto-approve"]);
        assert_eq!(r.code, 0, "{name}: {}", r.text());
        assert!(r.stdout.contains("vault.main: account \"kdeploy\" verified (POST /api/ping answered 200"), "{name}: {}", r.text());
        let data = c.vault_secret();
        let accounts: serde_json::Value = serde_json::from_str(&data["VAULT_ACCOUNTS"]).unwrap();
        assert_eq!(accounts[0]["access_key"], c.s.attr("vault.main", "access_key"), "{name}");
        let agent = c.server.workload_env("apps/v1", "Deployment", "kerberos-agent", "agent-cam-front").unwrap();
        assert_eq!(agent["AGENT_KERBEROSVAULT_DIRECTORY"], stack, "{name}: the stack's name, never *");
        assert_eq!(agent["AGENT_KERBEROSVAULT_SECRET_KEY"], accounts[0]["secret_access_key"], "{name}");
        let r = c.run(&["plan", "-detailed-exitcode"]);
        assert_eq!(r.code, 0, "{name}: {}", r.text());

        // Another account: a sensitive change of Vault's configuration, which restarts it once.
        let digest = |c: &Cluster| {
            c.server.object("apps/v1", "Deployment", Some("kerberos-vault"), "vault-main").unwrap()["spec"]["template"]["metadata"]["annotations"]["kdeploy.io/config-digest"].clone()
        };
        let before = digest(&c);
        c.s.write("site_override.hcl", "vault \"main\" {\n  account \"site-b\" {\n    directory = \"site-b\"\n  }\n}\n");
        let r = c.run(&["plan", "-detailed-exitcode"]);
        assert_eq!(r.code, 2, "{name}: {}", r.text());
        assert!(r.stdout.contains("~ vault_configuration = (sensitive value)"), "{name}: {}", r.text());
        let r = c.run(&["apply", "-auto-approve"]);
        assert_eq!(r.code, 0, "{name}: {}", r.text());
        assert!(r.stdout.contains("account \"kdeploy\" verified") && r.stdout.contains("account \"site-b\" verified"), "{name}: {}", r.text());
        assert_ne!(digest(&c), before, "{name}: the pod template changed, so Vault restarts with the new account");

        // Someone edits Vault's Secret and drops the accounts: Vault (restarted) no longer knows them.
        let mut secret = c.server.object("v1", "Secret", Some("kerberos-vault"), "vault-main").unwrap();
        secret["data"]["VAULT_ACCOUNTS"] = json!(base64::engine::general_purpose::STANDARD.encode("[]"));
        c.server.put_object(secret);
        let r = c.run(&["plan"]);
        assert!(r.stdout.contains("Status: vault.main: Vault runs but does not know the account \"kdeploy\""), "{name}: {}", r.text());
        let r = c.run(&["drift", "-detailed-exitcode", "-json"]);
        assert_eq!(r.code, 2, "{name}: {}", r.text());
        let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let statuses: Vec<&str> = j["drift"].as_array().unwrap().iter().map(|d| d["status"].as_str().unwrap()).collect();
        assert!(statuses.contains(&"unhealthy") && statuses.contains(&"changed"), "{name}: the account and the edited Secret: {}", r.stdout);
        // Apply restores the Secret, and the account answers again.
        let r = c.run(&["apply", "-auto-approve", "-force-conflicts"]);
        assert_eq!(r.code, 0, "{name}: {}", r.text());
        assert!(r.stdout.contains("account \"kdeploy\" verified"), "{name}: {}", r.text());
    }
}

#[test]
fn a_kubernetes_vault_that_refuses_or_ignores_its_definitions_is_explained() {
    // A release without Azure support crash loops on an azure provider.
    let c = cluster("kubernetes", Release::WithoutProviders(vec!["azure".into()]));
    c.s.write(
        "test_override.hcl",
        "vault \"main\" {\n  readiness_timeout = \"3s\"\n\n  provider \"blob\" {\n    type         = \"azure\"\n    account_name = \"acct\"\n    account_key  = \"KEY\"\n    container    = \"recordings\"\n  }\n}\n",
    );
    let r = c.run(&["apply", "-auto-approve"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("Deployment kerberos-vault/vault-main was not available after 3s"), "{}", r.text());
    assert!(r.stderr.contains("CrashLoopBackOff"), "{}", r.text());
    assert!(r.stderr.contains("last log lines:") && r.stderr.contains("unsupported provider \"azure\""), "Vault's log: {}", r.text());
    assert!(r.stderr.contains("Vault did not start."), "{}", r.text());

    // An image that predates the variables: ready, but the account is unknown.
    let c = cluster("kubernetes", Release::PredatesVariables);
    let r = c.run(&["apply", "-auto-approve"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("Vault runs but does not know the account \"kdeploy\" (POST /api/ping answered 403"), "{}", r.text());
    assert!(r.stderr.contains("The image ghcr.io/uug-ai/vault:v1.4.9 may predate the VAULT_* variables"), "{}", r.text());
    assert!(c.s.state().resource(&"vault.main".parse().unwrap()).is_some());
}

#[test]
fn the_fleet_example_records_each_site_with_its_own_account_on_the_central_vault() {
    if !engine() {
        return;
    }
    // The central cluster is a test API server running Vault (a stand-in), two sites are
    // Docker clusters on the local engine and one a MicroK8s node (another test API server, with
    // the add-ons `microk8s enable dns hostpath-storage` leaves): their agents upload to Vault's
    // external URL.
    let server = TestServer::start(Options::default());
    vault_standin(&server, "kerberos-vault", "vault-central", Release::Current);
    let west = TestServer::start(Options { storage_classes: vec![("microk8s-hostpath".into(), true)], ..Options::default() });
    west.put_object(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", "namespace": "kube-system"}, "spec": {"ports": [{"port": 53, "protocol": "UDP"}], "selector": {"k8s-app": "kube-dns"}}}));
    let s = example("fleet");
    let west_dir = s.path().join("west");
    std::fs::create_dir_all(&west_dir).unwrap();
    let west_kubeconfig = west.write_kubeconfig(&west_dir, "west").display().to_string();
    for site in ["north", "south"] {
        testing::cleanup(&format!("site-{site}-edge"));
    }
    let _guards = [Cleanup("site-north-edge".into()), Cleanup("site-south-edge".into())];
    let kubeconfig = server.write_kubeconfig(s.path(), "test").display().to_string();
    s.write(
        "sites.auto.kdvars",
        &format!(
            "kubeconfig = \"{kubeconfig}\"\nsites = {{\n  north = {{\n    docker_host = \"unix:///var/run/docker.sock\"\n    cert_path   = \"\"\n    cameras     = {{ door = \"rtsp://10.10.1.21/s1\", yard = \"rtsp://10.10.1.22/s1\" }}\n  }}\n  west = {{\n    kubeconfig = \"{west_kubeconfig}\"\n    cameras    = {{ dock = \"rtsp://10.30.1.21/s1\" }}\n  }}\n  south = {{\n    docker_host = \"unix:///var/run/docker.sock\"\n    cert_path   = \"\"\n    cameras     = {{ gate = \"rtsp://10.20.1.21/s1\" }}\n  }}\n}}\n"
        ),
    );
    // The agents run as stand-ins (an override file next to the module, as a user would write).
    let module_dir = s.path().join("../../modules/site");
    std::fs::write(module_dir.join("test_override.hcl"), format!("agent \"cam\" {{\n{}}}\n", overrides("agent"))).unwrap();

    let r = run_binary(s.path(), &[], &["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    for account in ["kdeploy", "north", "south", "west"] {
        assert!(r.stdout.contains(&format!("vault.central: account \"{account}\" verified")), "{account}: {}", r.text());
    }
    let secret = server.object("v1", "Secret", Some("kerberos-vault"), "vault-central").expect("vault secret");
    let decoded = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(secret["data"]["VAULT_ACCOUNTS"].as_str().unwrap()).unwrap()).unwrap();
    let accounts: serde_json::Value = serde_json::from_str(&decoded).unwrap();
    let key_of =
        |name: &str| accounts.as_array().unwrap().iter().find(|a| a["account"] == name).map(|a| a["access_key"].as_str().unwrap().to_string()).unwrap();
    let server_host = server.url().split("://").nth(1).unwrap().rsplit_once(':').unwrap().0.to_string();
    for (site, cam) in [("north", "door"), ("north", "yard"), ("south", "gate")] {
        let c = format!("kdeploy-site-{site}-edge-site-{site}-agent-cam-{cam}");
        assert_eq!(env_value(&c, "AGENT_KERBEROSVAULT_URI"), Some(format!("http://{server_host}:30080/api")), "{c}: Vault's external URL");
        assert_eq!(env_value(&c, "AGENT_KERBEROSVAULT_DIRECTORY").as_deref(), Some(site), "{c}");
        assert_eq!(env_value(&c, "AGENT_KERBEROSVAULT_ACCESS_KEY"), Some(key_of(site)), "{c}: the site's own account");
    }
    // The MicroK8s site: its agent is a Deployment on its own node, with its own account.
    let deployments = west.objects("apps/v1", "Deployment");
    assert_eq!(deployments.len(), 1, "one camera on west: {deployments:?}");
    let env = &deployments[0]["spec"]["template"]["spec"]["containers"][0]["env"];
    let plain = |name: &str| env.as_array().unwrap().iter().find(|e| e["name"] == name).and_then(|e| e["value"].as_str()).map(str::to_string);
    assert_eq!(plain("AGENT_KERBEROSVAULT_URI"), Some(format!("http://{server_host}:30080/api")), "west: Vault's external URL");
    assert_eq!(plain("AGENT_KERBEROSVAULT_DIRECTORY").as_deref(), Some("west"));
    assert!(s.path().join(".kdeploy/state.site-west-edge.json").exists(), "the MicroK8s site has its own partition");
    let r = run_binary(s.path(), &[], &["plan", "-detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());

    // Drift on two sites reads per site.
    for c in ["kdeploy-site-north-edge-site-north-agent-cam-door", "kdeploy-site-south-edge-site-south-agent-cam-gate"] {
        let removed = std::process::Command::new("docker").args(["rm", "-f", c]).output().unwrap();
        assert!(removed.status.success(), "{c}: {}", String::from_utf8_lossy(&removed.stderr));
    }
    let r = run_binary(s.path(), &[], &["drift", "-detailed-exitcode"]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(
        r.stdout.contains("On module.site[\"north\"].cluster.edge:\n  module.site[\"north\"].agent.cam[\"door\"] (agent kerberos): deleted outside kdeploy\nOn module.site[\"south\"].cluster.edge:\n  module.site[\"south\"].agent.cam[\"gate\"]"),
        "{}",
        r.text()
    );
    let r = run_binary(s.path(), &[], &["drift", "-json"]);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["drift"][0]["cluster"], "module.site[\"north\"].cluster.edge", "{}", r.stdout);
    let r = run_binary(s.path(), &[], &["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "the agents are back: {}", r.text());

    // Removing a site removes its agents and its account; the other site is untouched.
    let north_gate = env_value("kdeploy-site-north-edge-site-north-agent-cam-door", "AGENT_KERBEROSVAULT_SECRET_KEY");
    let vars = std::fs::read_to_string(s.path().join("sites.auto.kdvars")).unwrap();
    let south = vars.find("  south = {").unwrap();
    s.write("sites.auto.kdvars", &format!("{}}}\n", &vars[..south]));
    let r = run_binary(s.path(), &[], &["plan", "-detailed-exitcode"]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(r.stdout.contains("~ vault_configuration = (sensitive value)"), "Vault restarts once to drop the account: {}", r.text());
    assert!(
        r.stdout.contains(
            "Plan: 0 to add, 1 to change, 2 to destroy.\n  cluster.central: 0 to add, 1 to change, 0 to destroy\n  module.site[\"south\"].cluster.edge: 0 to add, 0 to change, 2 to destroy\n"
        ),
        "the south cluster and its agent, summed per cluster: {}",
        r.text()
    );
    let r = run_binary(s.path(), &[], &["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let after = r.stdout.rsplit("Destruction complete").next().unwrap_or_default();
    assert!(after.contains("account \"north\" verified") && !after.contains("account \"south\""), "{}", r.text());
    assert!(env_value("kdeploy-site-south-edge-site-south-agent-cam-gate", "AGENT_KERBEROSVAULT_URI").is_none(), "the south agent is gone");
    assert_eq!(env_value("kdeploy-site-north-edge-site-north-agent-cam-door", "AGENT_KERBEROSVAULT_SECRET_KEY"), north_gate, "north keeps its keys");

    let r = run_binary(s.path(), &[], &["destroy", "-auto-approve", "-delete-data"]);
    assert_eq!(r.code, 0, "{}", r.text());
}

/// A central Vault behind a LoadBalancer Service and two edge Kubernetes clusters with one
/// camera each: the agents upload to the address the load balancer gave Vault.
const LOAD_BALANCED_FLEET: &str = r#"stack "lb" {}

variable "central" {
  type = string
}

variable "edges" {
  type = map(string)
}

cluster "central" {
  type       = "kubernetes"
  kubeconfig = var.central
  context    = "test"
}

database "meta" {
  cluster = cluster.central
  type    = "mongodb"
}

object_storage "recordings" {
  cluster = cluster.central
  type    = "minio"
}

vault "central" {
  cluster           = cluster.central
  database          = database.meta
  storage           = object_storage.recordings
  service_type      = "LoadBalancer"
  readiness_timeout = "3s"
  accounts          = { for name, kubeconfig in var.edges : name => { directory = name } }
}

cluster "site" {
  for_each   = var.edges
  type       = "kubernetes"
  kubeconfig = each.value
  context    = "test"
}

agent "door" {
  for_each    = var.edges
  cluster     = cluster.site[each.key]
  vault       = vault.central
  account     = each.key
  camera_name = "door"
  rtsp_url    = "rtsp://10.10.1.21/stream1"
}
"#;

#[test]
fn a_central_vault_behind_a_load_balancer_or_an_ingress_serves_agents_on_other_kubernetes_clusters() {
    let central = TestServer::start(Options::default());
    vault_standin(&central, "kerberos-vault", "vault-central", Release::Current);
    let edges = [TestServer::start(Options::default()), TestServer::start(Options::default())];
    let s = TestStack::new(&[("main.hcl", LOAD_BALANCED_FLEET)]);
    let dir = |name: &str| s.path().join(name);
    let central_kc = central.write_kubeconfig(&dir("central"), "test").display().to_string();
    let edge_kc: Vec<String> = edges.iter().zip(["north", "south"]).map(|(e, n)| e.write_kubeconfig(&dir(n), "test").display().to_string()).collect();
    s.write("fleet.auto.kdvars", &format!("central = \"{central_kc}\"\nedges = {{\n  north = \"{}\"\n  south = \"{}\"\n}}\n", edge_kc[0], edge_kc[1]));

    let r = run_binary(s.path(), &[], &["plan", "-no-color"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("+ external_url") && r.stdout.contains("(known after apply)"), "the address comes with apply: {}", r.text());
    assert!(
        r.stdout.contains("Warning: vault.central: Service kerberos-vault/vault-central of type LoadBalancer would stay pending: the cluster has no load-balancer implementation"),
        "told before apply: {}",
        r.text()
    );

    // A bare cluster has no load-balancer implementation: the Service stays pending.
    let r = run_binary(s.path(), &[], &["apply", "-auto-approve"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("Service kerberos-vault/vault-central of type LoadBalancer got no address within 3s"), "{}", r.text());
    assert!(r.stderr.contains("MetalLB") && r.stderr.contains("service_type = \"NodePort\""), "what to do: {}", r.text());
    assert!(edges.iter().all(|e| e.objects("apps/v1", "Deployment").is_empty()), "no agent starts without the address it uploads to");

    // MetalLB installed: the next apply takes up the Vault it wrote and gets its address.
    central.set_load_balancer_ips(vec!["192.0.2.10".into()]);
    let r = run_binary(s.path(), &[], &["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(s.attr("vault.central", "external_url"), "http://192.0.2.10:80/api");
    for (edge, site) in edges.iter().zip(["north", "south"]) {
        let env = edge.workload_env("apps/v1", "Deployment", "kerberos-agent", &format!("agent-door-{site}")).expect("the site's agent");
        assert_eq!(env["AGENT_KERBEROSVAULT_URI"], "http://192.0.2.10:80/api", "{site}");
        assert_eq!(env["AGENT_KERBEROSVAULT_DIRECTORY"], site, "{site}");
    }
    let r = run_binary(s.path(), &[], &["plan", "-detailed-exitcode"]);
    assert_eq!(r.code, 0, "the address is kept: {}", r.text());

    // Back to a NodePort: the URL follows the exposure, and so do the agents.
    s.write("main.hcl", &LOAD_BALANCED_FLEET.replace("\"LoadBalancer\"", "\"NodePort\""));
    let r = run_binary(s.path(), &[], &["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let host = central.url().split("://").nth(1).unwrap().rsplit_once(':').unwrap().0.to_string();
    let env = edges[0].workload_env("apps/v1", "Deployment", "kerberos-agent", "agent-door-north").unwrap();
    assert_eq!(env["AGENT_KERBEROSVAULT_URI"], format!("http://{host}:30080/api"));

    // An Ingress with a certificate from cert-manager: agents upload over HTTPS to its host.
    let ingress = "  ingress_host      = \"vault.example.com\"\n  cert_issuer       = \"letsencrypt\"\n  readiness_timeout = \"3s\"";
    s.write("main.hcl", &LOAD_BALANCED_FLEET.replace("  readiness_timeout = \"3s\"", ingress));
    let r = run_binary(s.path(), &[], &["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let ing = central.object("networking.k8s.io/v1", "Ingress", Some("kerberos-vault"), "vault-central").expect("Vault's Ingress");
    assert_eq!(ing["metadata"]["annotations"]["cert-manager.io/cluster-issuer"], "letsencrypt", "{ing}");
    assert_eq!(ing["spec"]["tls"][0], json!({"hosts": ["vault.example.com"], "secretName": "vault-central-tls"}), "{ing}");
    assert_eq!(ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"], json!({"name": "vault-central", "port": {"number": 80}}), "{ing}");
    for (edge, site) in edges.iter().zip(["north", "south"]) {
        let env = edge.workload_env("apps/v1", "Deployment", "kerberos-agent", &format!("agent-door-{site}")).unwrap();
        assert_eq!(env["AGENT_KERBEROSVAULT_URI"], "https://vault.example.com/api", "{site}");
    }
    let r = run_binary(s.path(), &[], &["plan", "-detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());
    // Without the Ingress again: it is deleted with the exposure.
    s.write("main.hcl", LOAD_BALANCED_FLEET);
    let r = run_binary(s.path(), &[], &["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(central.object("networking.k8s.io/v1", "Ingress", Some("kerberos-vault"), "vault-central").is_none(), "the Ingress is gone");
    assert_eq!(s.attr("vault.central", "external_url"), "http://192.0.2.10:80/api", "back behind the load balancer");
}

/// A central Vault on Kubernetes and one Docker site that records on site first
/// (`modules/site` with `forward = true`).
fn forwarding_fleet(kubeconfig: &str, site_vault_port: u16) -> String {
    format!(
        r#"stack "fwd" {{}}

{central}
vault "central" {{
  cluster   = cluster.central
  database  = database.meta
  storage   = object_storage.recordings
  node_port = 30080
  accounts  = {{ north = {{ directory = "north" }} }}
}}

module "north" {{
  source          = "../../modules/site"
  name            = "north"
  vault           = vault.central
  docker_host     = "unix:///var/run/docker.sock"
  cert_path       = ""
  cameras         = {{ door = "rtsp://10.10.1.21/s1" }}
  forward         = true
  site_vault_port = {site_vault_port}
}}
"#,
        central = central_services(&format!("\"{kubeconfig}\""))
    )
}

#[test]
fn a_site_with_a_poor_uplink_records_on_site_and_forwards_to_the_central_vault() {
    if !engine() {
        return;
    }
    let server = TestServer::start(Options::default());
    vault_standin(&server, "kerberos-vault", "vault-central", Release::Current);
    let s = example("fleet");
    testing::cleanup("north-edge");
    let _guard = Cleanup("north-edge".into());
    let kubeconfig = server.write_kubeconfig(s.path(), "test").display().to_string();
    let port = free_port();
    s.write("main.hcl", &forwarding_fleet(&kubeconfig, port));
    let overrides = ["database", "object_storage", "vault", "agent"]
        .iter()
        .zip(["database \"site\"", "object_storage \"site\"", "vault \"site\"", "agent \"cam\""])
        .map(|(kind, block)| format!("{block} {{\n{}}}\n", overrides(kind)))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(s.path().join("../../modules/site/test_override.hcl"), overrides).unwrap();

    let r = run_binary(s.path(), &[], &["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("vault.central: account \"north\" verified"), "{}", r.text());
    assert!(r.stdout.contains("module.north.vault.site[0]: account \"north\" verified"), "{}", r.text());
    let containers = std::process::Command::new("docker").args(["ps", "--format", "{{.Names}}"]).output().unwrap();
    let names = String::from_utf8_lossy(&containers.stdout).to_string();
    let find =
        |part: &str| names.lines().find(|n| n.starts_with("kdeploy-north-edge") && n.contains(part)).unwrap_or_else(|| panic!("{part} in {names}")).to_string();
    let (site_vault, agent) = (find("vault-site"), find("agent-cam-door"));

    // The site Vault forwards to the central Vault's external URL with the site's account there.
    let central_key = |k: &str| s.attr("vault.central", "vault_accounts")["north"][k].as_str().unwrap().to_string();
    let integrations: serde_json::Value = serde_json::from_str(&env_value(&site_vault, "VAULT_INTEGRATIONS").expect("VAULT_INTEGRATIONS")).unwrap();
    let host = server.url().split("://").nth(1).unwrap().rsplit_once(':').unwrap().0.to_string();
    assert_eq!(integrations[0]["queue"], "kerberosvault", "{integrations}");
    assert_eq!(integrations[0]["vault_url"], format!("http://{host}:30080/api"), "{integrations}");
    assert_eq!(integrations[0]["access_key"], central_key("access_key"), "{integrations}");
    assert_eq!(integrations[0]["secret"], central_key("secret_key"), "{integrations}");
    // The agent uploads to the site Vault, with the site Vault's own keys.
    let uri = env_value(&agent, "AGENT_KERBEROSVAULT_URI").unwrap();
    assert!(uri.contains(&site_vault) && !uri.contains(&host), "{uri}");
    assert_ne!(env_value(&agent, "AGENT_KERBEROSVAULT_ACCESS_KEY").unwrap(), central_key("access_key"));
    assert_eq!(env_value(&agent, "AGENT_KERBEROSVAULT_DIRECTORY").as_deref(), Some("north"));

    let r = run_binary(s.path(), &[], &["plan", "-detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let r = run_binary(s.path(), &[], &["destroy", "-auto-approve", "-delete-data"]);
    assert_eq!(r.code, 0, "{}", r.text());
}

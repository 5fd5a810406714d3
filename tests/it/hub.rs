//! Kerberos Hub on Kubernetes: tests/fixtures/charts/hub (the public chart's values interface,
//! its MongoDB ConfigMap, an API Deployment and a ServiceMonitor) rendered by the real helm from
//! `path`, with values derived from the stack, kdeploy's seed Job next to it, and the
//! prometheus-operator prerequisite (tests/fixtures/charts/monitoring installs its CRD).

use std::path::PathBuf;

use kdeploy_kube_testserver::{Options, TestServer};
use serde_json::Value;

use crate::chart::helm;
use crate::support::{Out, TestStack, run_binary};

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/charts").join(name).display().to_string()
}

fn stack(kubeconfig: &str, monitoring: bool) -> String {
    stack_with(kubeconfig, monitoring, "", "")
}

/// The Hub stack; `hub_extra` is added to the hub block, `extra` after it.
fn stack_with(kubeconfig: &str, monitoring: bool, hub_extra: &str, extra: &str) -> String {
    let (chart, reference) = if monitoring {
        (format!("chart \"monitoring\" {{\n  path = \"{}\"\n}}\n", fixture("monitoring")), "  monitoring = chart.monitoring\n")
    } else {
        (String::new(), "")
    };
    format!(
        r#"stack "site" {{}}

variable "hub_license" {{
  type      = string
  default   = "test-license"
  sensitive = true
}}

cluster "k8s" {{
  type       = "kubernetes"
  kubeconfig = "{kubeconfig}"
  context    = "test"
}}

object_storage "rec" {{
  type = "minio"
}}

database "meta" {{
  type = "mongodb"
}}

broker "events" {{
  type = "rabbitmq"
}}

broker "live" {{
  type = "mosquitto"
}}

turn "relay" {{
  type = "coturn"
}}

vault "main" {{
  database          = database.meta
  storage           = object_storage.rec
  broker            = broker.events
  mqtt              = broker.live
  readiness_timeout = "20s"
}}

agent "cam" {{
  vault             = vault.main
  rtsp_url          = "rtsp://10.0.0.1/stream"
  readiness_timeout = "20s"
}}
{chart}
hub "main" {{
  database          = database.meta
  broker            = broker.events
  vault             = vault.main
  license           = var.hub_license
  path              = "{hub}"
  api_url           = "api.hub.example.com"
  mqtt              = broker.live
  turn              = turn.relay
{hub_extra}{reference}  values = {{
    kerberoshub = {{ frontend = {{ url = "hub.example.com" }} }}
  }}
}}
{extra}"#,
        hub = fixture("hub"),
        hub_extra = if hub_extra.contains("readiness_timeout") { hub_extra.to_string() } else { format!("  readiness_timeout = \"20s\"\n{hub_extra}") },
    )
}

fn kdeploy(dir: &std::path::Path, helm: &str, args: &[&str]) -> Out {
    run_binary(dir, &[("KDEPLOY_HELM", helm)], args)
}

fn env_of(deployment: &Value, name: &str) -> String {
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
    env.iter().find(|e| e["name"] == name).and_then(|e| e["value"].as_str()).unwrap_or_default().to_string()
}

fn secret_text(secret: &Value, key: &str) -> String {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD.decode(secret["data"][key].as_str().unwrap()).unwrap();
    String::from_utf8(b).unwrap()
}

#[test]
fn hub_is_refused_without_prometheus_crds_then_deployed_seeded_and_replanned() {
    let Some(helm) = helm() else { return };
    let server = TestServer::start(Options::default());
    let s = TestStack::new(&[]);
    let kubeconfig = server.write_kubeconfig(s.path(), "test").display().to_string();

    // No ServiceMonitor served and no chart installing it: a plan error with the hint.
    s.write("main.hcl", &stack(&kubeconfig, false));
    let r = kdeploy(s.path(), &helm, &["plan"]);
    assert_ne!(r.code, 0, "{}", r.text());
    assert!(r.text().contains("does not serve ServiceMonitor") && r.text().contains("prometheus-operator CRDs"), "{}", r.text());
    assert!(r.text().contains("monitoring = chart.NAME"), "the hint says how: {}", r.text());

    // With a chart that installs the CRD, the hub applies.
    s.write("main.hcl", &stack(&kubeconfig, true));
    let r = kdeploy(s.path(), &helm, &["apply", "--auto-approve"]);
    // The test API server runs no Vault, so Vault's health check after apply fails; the hub is applied.
    assert!(r.code == 0 || r.text().contains("checks failed"), "{}", r.text());
    assert!(r.stdout.contains("hub.main: Creation complete"), "{}", r.text());
    assert!(!r.text().contains("would stay pending"), "this mode renders no LoadBalancer Service: {}", r.text());
    assert!(!r.text().contains("test-license"), "the license is sensitive: {}", r.text());

    // Stack references reach the rendered objects.
    let mongo = server.object("v1", "ConfigMap", Some("kerberos-hub"), "mongodb-config").expect("the chart's MongoDB ConfigMap");
    assert_eq!(mongo["data"]["MONGODB_HOST"], "database-meta.mongodb");
    assert!(mongo["data"]["MONGODB_URI"].as_str().unwrap().starts_with("mongodb://root:"), "{mongo}");
    let api = server.object("apps/v1", "Deployment", Some("kerberos-hub"), "hub-api").expect("the chart's API Deployment");
    assert_eq!(env_of(&api, "KERBEROS_LICENSE"), "test-license");
    assert_eq!(env_of(&api, "QUEUE_SYSTEM"), "RABBITMQ");
    assert_eq!(env_of(&api, "QUEUE_HOST"), "broker-events.rabbitmq:5672");
    assert_eq!(env_of(&api, "API_URL"), "api.hub.example.com");
    assert_eq!(env_of(&api, "KERBEROS_VAULT_URI"), "http://127.0.0.1:30080/api", "the vault's external URL: browsers fetch recordings");
    assert_eq!(env_of(&api, "KERBEROS_VAULT_PROVIDER"), "rec");
    // The live view: browsers reach the broker's websocket and the TURN server from outside the cluster.
    let mqtt_password = s.attr("broker.live", "admin_password").as_str().unwrap().to_string();
    assert_eq!(
        ["MQTT_SERVER", "MQTT_PORT", "MQTT_PROTOCOL", "MQTT_USERNAME", "MQTT_PASSWORD"].map(|k| env_of(&api, k)),
        ["127.0.0.1", "31080", "ws", "kerberos", mqtt_password.as_str()]
    );
    let turn_password = s.attr("turn.relay", "admin_password").as_str().unwrap().to_string();
    assert_eq!(["TURN_URI", "TURN_USERNAME", "TURN_PASSWORD"].map(|k| env_of(&api, k)), ["turn:127.0.0.1:30478", "kerberos", turn_password.as_str()]);
    // Vault listens on the same broker (in the cluster) for Hub's on-demand requests.
    let vault = server.workload_env("apps/v1", "Deployment", "kerberos-vault", "vault-main").expect("the vault");
    assert_eq!(vault["MQTTURI"], "tcp://broker-live.mosquitto:1883");
    assert_eq!((vault["MQTT_USERNAME"].as_str(), vault["MQTT_PASSWORD"].as_str()), ("kerberos", mqtt_password.as_str()));
    assert!(env_of(&api, "JWT_SECRET").len() >= 32, "a generated JWT secret, not the chart's default");
    let agent = server.objects("apps/v1", "Deployment").into_iter().find(|d| d["metadata"]["namespace"] == "kerberos-agent").expect("the agent");
    let agent_env = |name: &str| {
        let env = agent["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
        env.iter().find(|e| e["name"] == name).and_then(|e| e["value"].as_str()).map(str::to_string)
    };
    assert!(env_of(&api, "KERBEROS_VAULT_ACCESS_KEY").starts_with("kd"), "the vault account's generated key");
    assert!(server.object("monitoring.coreos.com/v1", "ServiceMonitor", Some("kerberos-hub"), "hub-metrics-servicemonitor").is_some());
    let nodeport = server.object("v1", "Service", Some("kerberos-hub"), "hub-frontend-nodeport").expect("a NodePort without ingress");
    assert_eq!(nodeport["spec"]["ports"][0]["nodePort"], 32080);

    // The seed: user name = the agents' upload directory, the keys agents would use.
    let seed = server.object("v1", "Secret", Some("kerberos-hub"), "hub-seed").expect("the seed's Secret");
    let directory = agent_env("AGENT_KERBEROSVAULT_DIRECTORY").expect("the agent's upload directory");
    assert_eq!(directory, "site");
    assert_eq!(secret_text(&seed, "HUB_USERNAME"), directory, "Hub shows the recordings of the user named like their folder");
    assert!(secret_text(&seed, "MONGODB_URI").contains("@database-meta.mongodb:27017"));
    let script = server.object("v1", "ConfigMap", Some("kerberos-hub"), "hub-seed").expect("the seed script");
    let js = script["data"]["seed.js"].as_str().unwrap();
    assert!(js.contains("users.updateOne") && js.contains("upsert: true") && js.contains("amazon_access_key_id"), "{js}");
    let job = server.objects("batch/v1", "Job").into_iter().find(|j| j["metadata"]["name"].as_str().unwrap().starts_with("hub-seed-")).expect("the seed Job");
    let pod = &job["spec"]["template"]["spec"];
    assert!(pod["containers"][0]["command"][2].as_str().unwrap().contains("mongosh"), "{pod}");
    assert!(pod["initContainers"][0]["command"][2].as_str().unwrap().contains("htpasswd -nbBC"), "the password is stored as a bcrypt hash");
    assert!(!job.to_string().contains(&secret_text(&seed, "HUB_PASSWORD")), "the password stays in the Secret");

    // Nothing changed: no changes, and no helm needed to decide so.
    let r = kdeploy(s.path(), "/nonexistent/helm", &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("No changes."), "{}", r.stdout);
}

/// A site Vault that forwards on demand to the Vault Hub reads, asked by that Hub.
const EDGE_VAULT: &str = r#"
vault "edge" {
  database          = database.meta
  storage           = object_storage.rec
  mqtt              = broker.live
  service_type      = "ClusterIP"
  readiness_timeout = "20s"

  forward "central" {
    vault        = vault.main
    forward_type = "ondemand"
    hub          = hub.main
  }
}
"#;

#[test]
fn an_on_demand_forward_gets_the_hubs_url_cloud_key_and_user_name() {
    let Some(helm) = helm() else { return };
    let server = TestServer::start(Options::default());
    let s = TestStack::new(&[]);
    let kubeconfig = server.write_kubeconfig(s.path(), "test").display().to_string();

    // On demand without a hub: refused, saying what to add (its location: tests/fixtures/errors/vault_blocks).
    s.write("main.hcl", &stack_with(&kubeconfig, true, "", &EDGE_VAULT.replace("    hub          = hub.main\n", "")));
    let r = kdeploy(s.path(), &helm, &["validate"]);
    assert_ne!(r.code, 0, "{}", r.text());
    assert!(r.text().contains("is on demand") && r.text().contains("add hub = hub.NAME"), "{}", r.text());

    s.write("main.hcl", &stack_with(&kubeconfig, true, "", EDGE_VAULT));
    let r = kdeploy(s.path(), &helm, &["apply", "--auto-approve"]);
    assert!(r.code == 0 || r.text().contains("checks failed"), "{}", r.text());
    assert!(r.stdout.contains("vault.edge: Creation complete"), "{}", r.text());
    let hub_at = r.stdout.find("hub.main: Creation complete").expect("the hub");
    assert!(hub_at < r.stdout.find("vault.edge: Creation complete").unwrap(), "the forwarding Vault waits for the Hub it names:\n{}", r.stdout);

    let vault = server.workload_env("apps/v1", "Deployment", "kerberos-vault", "vault-edge").expect("the edge vault");
    let integrations: Value = serde_json::from_str(&vault["VAULT_INTEGRATIONS"]).unwrap();
    let forward = &integrations[0];
    assert_eq!(forward["queue"], "kerberosvault", "{integrations}");
    assert_eq!(forward["forward_type"], "ondemand", "{integrations}");
    assert_eq!(forward["vault_url"], "http://vault-main.kerberos-vault:80/api", "{integrations}");
    assert_eq!(forward["url"], "http://hub-api-svc.kerberos-hub:8081", "Hub's API in the cluster they share: {integrations}");
    assert_eq!(forward["cloudkey"], s.attr("hub.main", "hub_key"), "{integrations}");
    let seed = server.object("v1", "Secret", Some("kerberos-hub"), "hub-seed").expect("the seed's Secret");
    assert_eq!(forward["cloudkey"], secret_text(&seed, "HUB_KEY"), "the key of the user Hub was seeded with");
    assert_eq!(forward["username"], "site", "Hub's user, the agents' upload folder: {integrations}");
    assert_eq!(s.attr("hub.main", "hub_username"), "site");
    assert_eq!(s.attr("hub.main", "external_url"), "http://127.0.0.1:32081", "from another cluster: the API's NodePort");

    let r = kdeploy(s.path(), "/nonexistent/helm", &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());
}

#[test]
fn a_hub_behind_an_ingress_is_told_at_plan_what_the_cluster_lacks() {
    let Some(helm) = helm() else { return };
    let server = TestServer::start(Options::default());
    let s = TestStack::new(&[]);
    let kubeconfig = server.write_kubeconfig(s.path(), "test").display().to_string();
    s.write("main.hcl", &stack_with(&kubeconfig, true, "  ingress = \"nginx\"\n", ""));
    // The chart's Ingress (class nginx, cert-manager's letsencrypt-prod): neither is on the cluster.
    let r = kdeploy(s.path(), &helm, &["plan", "-no-color"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let warnings: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with("Warning: hub.main: ")).collect();
    assert_eq!(warnings.len(), 2, "one per missing piece: {warnings:?}");
    assert!(
        warnings[0].contains("The cluster has no IngressClass (no ingress controller): the Ingress for api.hub.example.com would not be served"),
        "{warnings:?}"
    );
    assert!(warnings[1].contains("cert-manager is not installed") && warnings[1].contains("\"letsencrypt-prod\""), "{warnings:?}");
}

#[test]
fn a_hub_load_balancer_without_an_implementation_fails_with_what_to_install() {
    let Some(helm) = helm() else { return };
    let server = TestServer::start(Options::default());
    let s = TestStack::new(&[]);
    let kubeconfig = server.write_kubeconfig(s.path(), "test").display().to_string();
    // The chart in mode "all" renders vault-proxy-svc of type LoadBalancer; nothing gives it an address.
    let all = stack_with(&kubeconfig, true, "  readiness_timeout = \"3s\"\n", "")
        .replace("    kerberoshub = { frontend", "    mode        = \"all\"\n    kerberoshub = { frontend");
    assert!(all.contains("mode        = \"all\""), "{all}");
    s.write("main.hcl", &all);
    // Told before apply: the Vault keys Hub's values need come with apply, so kdeploy renders
    // the chart with placeholders for them to see its Services.
    let r = kdeploy(s.path(), &helm, &["plan", "-no-color"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(
        r.stdout.contains(
            "Warning: hub.main: Service kerberos-hub/vault-proxy-svc of type LoadBalancer would stay pending: the cluster has no load-balancer implementation"
        ),
        "{}",
        r.text()
    );
    assert!(r.stdout.contains("microk8s enable metallb") && r.stdout.contains("mode \"all\""), "what to do: {}", r.text());
    let r = kdeploy(s.path(), &helm, &["apply", "--auto-approve"]);
    assert_ne!(r.code, 0, "{}", r.text());
    let text = r.text();
    assert!(text.contains("hub.main: Service kerberos-hub/vault-proxy-svc of type LoadBalancer got no address"), "{text}");
    assert!(text.contains("no load-balancer implementation") && text.contains("MetalLB"), "what to install: {text}");
    assert!(text.contains("mode \"all\""), "what else to change: {text}");

    // Once the cluster has one, the next apply completes.
    server.set_load_balancer_ips(vec!["192.0.2.30".into()]);
    let r = kdeploy(s.path(), &helm, &["apply", "--auto-approve"]);
    assert!(r.code == 0 || r.text().contains("checks failed"), "{}", r.text());
    assert!(!r.text().contains("got no address"), "{}", r.text());
    let svc = server.object("v1", "Service", Some("kerberos-hub"), "vault-proxy-svc").expect("the LoadBalancer Service");
    assert_eq!(svc["status"]["loadBalancer"]["ingress"][0]["ip"], "192.0.2.30");
}

//! The Kubernetes provider end to end through the CLI, against the in-process test API server
//! (tests/kube-apiserver), which stands in for a real cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use kdeploy::providers::Providers;
use kdeploy_kube_testserver::{Options, TestServer};
use serde_json::json;

use crate::support::{Run, TestStack, run_with};

fn providers() -> Providers {
    Providers::builtin()
}

fn kdeploy(s: &TestStack, args: &[&str]) -> Run {
    run_with(s.path(), providers(), args, BTreeMap::new(), "")
}

fn stack(kubeconfig: &str, cluster_type: &str, extra_cluster: &str, cams: &[(&str, &str)], db_password: &str) -> String {
    let cams: Vec<String> = cams.iter().map(|(k, v)| format!("    {k} = \"{v}\"")).collect();
    format!(
        r#"variable "cameras" {{
  type = map(string)
  default = {{
{cams}
  }}
}}

cluster "k8s" {{
  type       = "{cluster_type}"
  kubeconfig = "{kubeconfig}"
  context    = "test"
{extra_cluster}
}}

object_storage "recordings" {{
  type              = "minio"
  readiness_timeout = "20s"
}}

database "meta" {{
  type              = "mongodb"
  password          = "{db_password}"
  readiness_timeout = "20s"
}}

broker "events" {{
  type              = "rabbitmq"
  readiness_timeout = "20s"
}}

vault "main" {{
  database          = database.meta
  storage           = object_storage.recordings
  broker            = broker.events
  readiness_timeout = "20s"
}}

agent "cam" {{
  for_each          = var.cameras
  vault             = vault.main
  rtsp_url          = each.value
  readiness_timeout = "20s"
}}

factory "ui" {{
  readiness_timeout = "20s"
}}

output "vault_url" {{
  value = vault.main.url
}}
"#,
        cams = cams.join("\n")
    )
}

const CAMS: &[(&str, &str)] = &[("front", "rtsp://10.0.0.1/s1"), ("back", "rtsp://10.0.0.2/s1"), ("yard", "rtsp://10.0.0.3/s1")];

struct Env {
    server: TestServer,
    s: TestStack,
    kubeconfig: String,
}

fn env(opts: Options) -> Env {
    let server = TestServer::start(opts);
    crate::support::vault_standin(&server, "kerberos-vault", "vault-main", Default::default());
    let s = TestStack::new(&[]);
    let kubeconfig = server.write_kubeconfig(s.path(), "test").display().to_string();
    Env { server, s, kubeconfig }
}

fn deployment(server: &TestServer, ns: &str, name: &str) -> Option<serde_json::Value> {
    server.object("apps/v1", "Deployment", Some(ns), name)
}

fn env_of(dep: &serde_json::Value, name: &str) -> Option<String> {
    dep["spec"]["template"]["spec"]["containers"][0]["env"].as_array()?.iter().find(|e| e["name"] == name).and_then(|e| e["value"].as_str()).map(str::to_string)
}

#[test]
fn whole_stack_lifecycle_on_kubernetes() {
    let e = env(Options::default());
    e.s.write("main.hcl", &stack(&e.kubeconfig, "kubernetes", "", CAMS, "first-password"));

    // A namespace that exists already is used, and never deleted by kdeploy.
    e.server.put_object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kerberos-vault"}}));
    // Apply from empty.
    let r = kdeploy(&e.s, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("Apply complete! Resources: 9 added, 0 changed, 0 destroyed."), "{}", r.stdout);
    for (ns, name) in
        [("kerberos-vault", "vault-main"), ("kerberos-agent", "agent-cam-front"), ("kerberos-agent", "agent-cam-yard"), ("kerberos-factory", "factory-ui")]
    {
        let d = deployment(&e.server, ns, name).unwrap_or_else(|| panic!("deployment {ns}/{name}"));
        assert_eq!(d["metadata"]["labels"]["app.kubernetes.io/managed-by"], "kdeploy");
        let managers: Vec<&str> = d["metadata"]["managedFields"].as_array().unwrap().iter().filter_map(|m| m["manager"].as_str()).collect();
        assert!(managers.contains(&"kdeploy"), "{managers:?}");
    }
    for (ns, name) in [("mongodb", "database-meta"), ("minio", "object-storage-recordings"), ("rabbitmq", "broker-events")] {
        assert!(e.server.object("apps/v1", "StatefulSet", Some(ns), name).is_some(), "statefulset {ns}/{name}");
    }
    let vault = deployment(&e.server, "kerberos-vault", "vault-main").unwrap();
    let init = vault["spec"]["template"]["spec"]["initContainers"][0]["command"][2].as_str().unwrap().to_string();
    assert!(init.contains("nc -z database-meta.mongodb 27017"), "the readiness gate uses the real database endpoint: {init}");
    let agent = deployment(&e.server, "kerberos-agent", "agent-cam-front").unwrap();
    assert_eq!(env_of(&agent, "AGENT_KERBEROSVAULT_URI").as_deref(), Some("http://vault-main.kerberos-vault:80/api"));
    assert_eq!(env_of(&agent, "AGENT_MQTT_URI").as_deref(), Some(""));
    let secret = e.server.object("v1", "Secret", Some("kerberos-agent"), "agent-cam-front").unwrap();
    assert!(secret.to_string().contains("AGENT_KERBEROSVAULT_SECRET_KEY"));
    let svc = e.server.object("v1", "Service", Some("kerberos-vault"), "vault-main").unwrap();
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30080);
    assert!(e.server.object("rbac.authorization.k8s.io/v1", "ClusterRole", None, "kerberos-factory-factory-ui").is_some());
    let out = kdeploy(&e.s, &["output", "vault_url"]);
    assert!(out.stdout.starts_with("\"http://127.0.0.1:30080\""), "{}", out.stdout);

    // Plan again: nothing to do (API-server defaults are not changes), and objects Factory
    // creates at runtime (not kdeploy's) are not drift.
    e.server.put_object(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "camera-made-by-factory", "namespace": "kerberos-factory", "labels": {"app": "x"}},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "a", "image": "kerberos/agent:v3.5.0"}]}}}}));
    let r = kdeploy(&e.s, &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("No changes."));
    assert!(r.stdout.contains("Status: vault.main: Vault answers /api/health"), "the plan reports Vault's health: {}", r.stdout);
    assert!(r.stdout.contains("Status: vault.main: account \"kdeploy\" verified (POST /api/ping answered 200"), "and each account: {}", r.stdout);

    // One camera's URL: one in-place update.
    let cams2 = [("front", "rtsp://10.0.0.9/s1"), ("back", "rtsp://10.0.0.2/s1"), ("yard", "rtsp://10.0.0.3/s1")];
    e.s.write("main.hcl", &stack(&e.kubeconfig, "kubernetes", "", &cams2, "first-password"));
    let r = kdeploy(&e.s, &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("# agent.cam[\"front\"] will be updated in place"), "{}", r.stdout);
    assert!(r.stdout.contains("Plan: 0 to add, 1 to change, 0 to destroy."), "{}", r.stdout);
    let r = kdeploy(&e.s, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let secret = e.server.object("v1", "Secret", Some("kerberos-agent"), "agent-cam-front").unwrap();
    use base64::Engine as _;
    let rtsp = base64::engine::general_purpose::STANDARD.decode(secret["data"]["AGENT_CAPTURE_IPCAMERA_RTSP"].as_str().unwrap()).unwrap();
    assert_eq!(String::from_utf8(rtsp).unwrap(), "rtsp://10.0.0.9/s1");

    // Add one camera, remove another.
    let cams3 = [("front", "rtsp://10.0.0.9/s1"), ("back", "rtsp://10.0.0.2/s1"), ("gate", "rtsp://10.0.0.4/s1")];
    e.s.write("main.hcl", &stack(&e.kubeconfig, "kubernetes", "", &cams3, "first-password"));
    let r = kdeploy(&e.s, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("Plan: 1 to add, 0 to change, 1 to destroy."), "{}", r.stdout);
    assert!(deployment(&e.server, "kerberos-agent", "agent-cam-gate").is_some());
    assert!(deployment(&e.server, "kerberos-agent", "agent-cam-yard").is_none());
    assert!(e.server.object("v1", "Secret", Some("kerberos-agent"), "agent-cam-yard").is_none());

    // A new database password rolls the workloads that use it.
    let before =
        deployment(&e.server, "kerberos-vault", "vault-main").unwrap()["spec"]["template"]["metadata"]["annotations"]["kdeploy.io/config-digest"].clone();
    e.s.write("main.hcl", &stack(&e.kubeconfig, "kubernetes", "", &cams3, "second-password"));
    let r = kdeploy(&e.s, &["plan"]);
    assert!(r.stdout.contains("# database.meta will be updated in place"), "{}", r.stdout);
    assert!(r.stdout.contains("# vault.main will be updated in place"), "{}", r.stdout);
    assert!(!r.stdout.contains("second-password"), "never printed");
    let r = kdeploy(&e.s, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let after =
        deployment(&e.server, "kerberos-vault", "vault-main").unwrap()["spec"]["template"]["metadata"]["annotations"]["kdeploy.io/config-digest"].clone();
    assert_ne!(before, after, "vault pods roll");
    assert_eq!(kdeploy(&e.s, &["plan", "--detailed-exitcode"]).code, 0);

    // Out-of-band edit: drift, and apply puts it back.
    let mut dep = deployment(&e.server, "kerberos-agent", "agent-cam-back").unwrap();
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = json!("kerberos/agent:hand-edited");
    let mf = dep["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
    // kubectl edit: the field moves to another manager.
    let mut mf2: Vec<serde_json::Value> = mf
        .into_iter()
        .map(|mut m| {
            if m["manager"] == "kdeploy"
                && let Some(c) = m["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"].as_object_mut()
            {
                for (_, v) in c.iter_mut() {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("f:image");
                    }
                }
            }
            m
        })
        .collect();
    mf2.push(json!({"manager": "kubectl-edit", "operation": "Update", "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"agent\"}": {"f:image": {}}}}}}}}));
    dep["metadata"]["managedFields"] = json!(mf2);
    e.server.put_object(dep);
    let r = kdeploy(&e.s, &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("Note: Objects have changed outside of kdeploy"), "{}", r.stdout);
    assert!(r.stdout.contains("# agent.cam[\"back\"] has changed"), "{}", r.stdout);
    assert!(r.stdout.contains("# agent.cam[\"back\"] will be updated in place"), "{}", r.stdout);
    // Without --force-conflicts, apply refuses to take the field back from the other manager.
    let r = kdeploy(&e.s, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("conflict with \"kubectl-edit\""), "{}", r.stdout);
    assert!(r.stdout.contains("run with --force-conflicts"), "{}", r.stdout);
    let r = kdeploy(&e.s, &["apply", "--auto-approve", "--force-conflicts"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let img = deployment(&e.server, "kerberos-agent", "agent-cam-back").unwrap()["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    assert_eq!(img, json!(kdeploy_provider::images::AGENT));
    assert_eq!(kdeploy(&e.s, &["plan", "--detailed-exitcode"]).code, 0);

    // Destroy: everything kdeploy made is gone, volume claims are kept.
    e.server.put_object(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data-database-meta-0", "namespace": "mongodb", "labels": {"app.kubernetes.io/instance": "database-meta"}}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "8Gi"}}}}));
    let r = kdeploy(&e.s, &["destroy", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    for (av, kind) in [("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("v1", "Secret"), ("v1", "Service"), ("v1", "ConfigMap"), ("batch/v1", "Job")] {
        let left: Vec<_> = e.server.objects(av, kind).into_iter().filter(|o| o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kdeploy").collect();
        assert!(left.is_empty(), "{kind} left behind: {left:?}");
    }
    assert!(e.server.object("v1", "PersistentVolumeClaim", Some("mongodb"), "data-database-meta-0").is_some(), "data kept");
    assert!(e.server.object("v1", "Namespace", None, "mongodb").is_some(), "a namespace holding kept data stays");
    assert!(e.server.object("v1", "Namespace", None, "kerberos-agent").is_none(), "empty namespaces kdeploy created go");
    assert!(e.server.object("v1", "Namespace", None, "kerberos-vault").is_some(), "a namespace kdeploy did not create stays");
    assert!(e.s.state().resources.is_empty());
}

#[test]
fn plan_requests_do_not_grow_with_the_number_of_cameras() {
    let mut counts = Vec::new();
    for n in [2usize, 9] {
        let e = env(Options::default());
        write_cameras(&e, n);
        let r = kdeploy(&e.s, &["apply", "--auto-approve"]);
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        // Apply reads each namespace once, not once per component.
        let ns_reads: Vec<String> = e
            .server
            .requests()
            .into_iter()
            .filter(|(m, p)| m == "GET" && p.starts_with("/api/v1/namespaces/") && p.split('/').count() == 5)
            .map(|(_, p)| p)
            .collect();
        let distinct: std::collections::BTreeSet<&String> = ns_reads.iter().collect();
        assert_eq!(ns_reads.len(), distinct.len(), "one GET per namespace: {ns_reads:?}");
        e.server.clear_requests();
        let r = kdeploy(&e.s, &["plan", "--detailed-exitcode"]);
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        let reqs = e.server.requests();
        // Besides reads, only Vault's health and account checks (through the service proxy).
        let (checks, api): (Vec<_>, Vec<_>) = reqs.iter().partition(|(_, p)| p.contains("/services/vault-main:80/proxy/"));
        assert!(api.iter().all(|(m, _)| m == "GET"), "a no-op plan only reads: {reqs:?}");
        assert_eq!(checks.len(), 2, "one health check, one account ping: {checks:?}");
        counts.push(reqs.len());
    }
    assert_eq!(counts[0], counts[1], "2 cameras vs 9 cameras: {counts:?}");
}

/// Writes the stack with `n` cameras (`c0`, `c1`, ...) and returns them (name, RTSP URL).
fn write_cameras(e: &Env, n: usize) -> Vec<(String, String)> {
    let cams: Vec<(String, String)> = (0..n).map(|i| (format!("c{i}"), format!("rtsp://10.0.0.{i}/s"))).collect();
    let refs: Vec<(&str, &str)> = cams.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    e.s.write("main.hcl", &stack(&e.kubeconfig, "kubernetes", "", &refs, "pw"));
    cams
}

/// The requests of an apply that read workloads (Deployments, StatefulSets, Jobs).
fn workload_reads(server: &TestServer) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|(m, p)| m == "GET" && ["/deployments", "/statefulsets", "/jobs"].iter().any(|k| p.contains(k)))
        .map(|(_, p)| p)
        .collect()
}

#[test]
fn readiness_waits_share_one_list_and_watch_per_kind_and_namespace() {
    let mut counts = Vec::new();
    for n in [2usize, 12] {
        // Workloads become ready a moment after each write: every component waits.
        let e = env(Options { ready_after: Some(Duration::from_millis(200)), ..Options::default() });
        let cams = write_cameras(&e, n);
        let out = crate::support::run_binary(e.s.path(), &[], &["apply", "--auto-approve", "--parallelism", "3"]);
        assert_eq!(out.code, 0, "{}", out.text());
        let reads = workload_reads(&e.server);
        // No workload is read on its own: only LISTs and WATCHes of a kind in a namespace.
        let collections: std::collections::BTreeSet<&str> = reads.iter().map(|p| p.split('?').next().unwrap_or_default()).collect();
        assert!(collections.iter().all(|c| ["/deployments", "/statefulsets", "/jobs"].iter().any(|k| c.ends_with(k))), "{reads:#?}");
        let watches = reads.iter().filter(|p| p.contains("watch=1")).count();
        assert_eq!(watches, collections.len(), "one WATCH per kind and namespace: {reads:#?}");
        assert_eq!(reads.len() - watches, collections.len(), "one LIST per kind and namespace: {reads:#?}");
        for (k, _) in &cams {
            let dep = deployment(&e.server, "kerberos-agent", &format!("agent-cam-{k}")).expect("agent deployment");
            assert_eq!(dep["status"]["availableReplicas"], 1, "apply returned before agent {k} was ready");
        }
        counts.push(reads.len());
    }
    assert_eq!(counts[0], counts[1], "2 cameras vs 12 cameras: {counts:?}");
}

#[test]
fn interrupted_creates_are_found_with_one_list_per_kind_and_namespace() {
    let mut counts = Vec::new();
    for n in [2usize, 9] {
        let e = env(Options::default());
        write_cameras(&e, n);
        let r = kdeploy(&e.s, &["apply", "--auto-approve"]);
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        // As if the apply had died after writing the agents' objects, before recording them.
        let mut st = e.s.state();
        for agent in st.remove_matching("agent.cam") {
            let mut attributes = agent.attributes.clone();
            if let Some(m) = attributes.as_object_mut() {
                m.remove("objects");
                m.remove("manifest_digest");
            }
            let target = kdeploy_state::PendingTarget {
                kind: agent.kind,
                type_name: agent.type_name.clone(),
                provider: agent.provider.clone(),
                attributes,
                dependencies: agent.dependencies.clone(),
            };
            st.begin_pending(&agent.address, kdeploy_state::PendingKind::Create, Some(target));
        }
        std::fs::write(e.s.state_path(), kdeploy_state::encode(&st)).expect("write state");
        e.server.clear_requests();
        let r = kdeploy(&e.s, &["plan"]);
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("A previous run was interrupted while it was creating agent.cam[\"c1\"]"), "{}", r.stdout);
        // Found, not created again: recorded as they are.
        assert!(r.stdout.contains("Plan: 0 to add"), "{}", r.stdout);
        let lists = e.server.requests().into_iter().filter(|(m, p)| m == "GET" && p.contains("labelSelector=")).count();
        counts.push(lists);
    }
    assert_eq!(counts[0], counts[1], "LISTs with 2 vs 9 interrupted agents: {counts:?}");
}

#[test]
fn unreachable_cluster_and_wrong_context_are_clear_and_lose_nothing() {
    let e = env(Options::default());
    e.s.write("main.hcl", &stack(&e.kubeconfig, "kubernetes", "", CAMS, "pw"));
    assert_eq!(kdeploy(&e.s, &["apply", "--auto-approve"]).code, 0);
    let serial = e.s.state().serial;

    let wrong = stack(&e.kubeconfig, "kubernetes", "", CAMS, "pw").replace("context    = \"test\"", "context    = \"prod\"");
    e.s.write("main.hcl", &wrong);
    let r = kdeploy(&e.s, &["plan"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("has no context \"prod\"; its contexts are: test"), "{}", r.stderr);

    e.s.write("main.hcl", &stack(&e.kubeconfig, "kubernetes", "", CAMS, "pw"));
    drop(e.server);
    let r = kdeploy(&e.s, &["plan"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("cannot reach the Kubernetes API server at http://127.0.0.1:"), "{}", r.stderr);
    let r = kdeploy(&e.s, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 1);
    assert_eq!(e.s.state().serial, serial, "state untouched");
    assert_eq!(e.s.state().resources.len(), 9);
}

#[test]
fn missing_microk8s_addons_and_storage_class_fail_at_plan_time() {
    let e = env(Options { storage_classes: vec![("standard".into(), false)], ..Options::default() });
    e.s.write("main.hcl", &stack(&e.kubeconfig, "microk8s", "", CAMS, "pw"));
    let r = kdeploy(&e.s, &["plan"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("hostpath-storage"), "{}", r.stderr);
    assert!(r.stderr.contains("microk8s enable"), "{}", r.stderr);
    e.s.write("main.hcl", &stack(&e.kubeconfig, "kubernetes", "", CAMS, "pw"));
    let r = kdeploy(&e.s, &["plan"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no default StorageClass"), "{}", r.stderr);
    e.s.write("main.hcl", &stack(&e.kubeconfig, "kubernetes", "  storage_class = \"fast\"", CAMS, "pw"));
    let r = kdeploy(&e.s, &["plan"]);
    assert!(r.stderr.contains("storage class \"fast\" does not exist"), "{}", r.stderr);
    assert!(!e.s.state_path().exists());
}

#[test]
fn rbac_denial_is_reported_with_the_fix() {
    let e = env(Options::default());
    e.s.write("main.hcl", &stack(&e.kubeconfig, "kubernetes", "", CAMS, "pw"));
    e.server.set_forbidden(vec![("patch".into(), "deployments".into(), Some("kerberos-agent".into()))]);
    let r = kdeploy(&e.s, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("forbidden"), "{}", r.stdout);
    assert!(r.stdout.contains("Role or ClusterRole binding"), "{}", r.stdout);
    // What succeeded is recorded; the agents are not.
    let st = e.s.state();
    assert!(st.resource(&"vault.main".parse().unwrap()).is_some());
    assert!(st.resource(&"agent.cam[\"front\"]".parse().unwrap()).is_none());
    assert!(st.pending.is_empty());
}

#[test]
fn readiness_timeout_shows_pod_state_and_events() {
    let e = env(Options { ready_after: None, ..Options::default() });
    let text = stack(&e.kubeconfig, "kubernetes", "", &[("front", "rtsp://x")], "pw").replace("readiness_timeout = \"20s\"", "readiness_timeout = \"2s\"");
    e.s.write("main.hcl", &text);
    let r = kdeploy(&e.s, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("was not ready after 2s"), "{}", r.stdout);
    assert!(r.stdout.contains("Pending"), "{}", r.stdout);
    assert!(r.stdout.contains("ImagePullBackOff"), "{}", r.stdout);
    assert!(r.stdout.contains("event Warning"), "{}", r.stdout);
    let _ = Duration::ZERO;
}

#[test]
fn drift_schedule_deploys_a_read_only_cronjob() {
    let e = env(Options::default());
    let text = format!(
        r#"variable "webhook" {{
  type      = string
  sensitive = true
}}

cluster "k8s" {{
  type       = "kubernetes"
  kubeconfig = "{kc}"
  context    = "test"
}}

drift_schedule "nightly" {{
  schedule   = "17 3 * * *"
  files      = {{ "main.hcl" = file("main.hcl") }}
  namespaces = ["kerberos-agent", "kerberos-vault"]
  notify     = var.webhook
}}
"#,
        kc = e.kubeconfig
    );
    e.s.write("main.hcl", &text);
    let vars: BTreeMap<String, String> = [("KDEPLOY_VAR_webhook".to_string(), "https://hooks.example.com/T/secret-token".to_string())].into();
    let r = run_with(e.s.path(), providers(), &["apply", "--auto-approve"], vars.clone(), "");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("secret-token"), "the webhook URL is sensitive");
    let secret = e.server.object("v1", "Secret", Some("kdeploy"), "drift-schedule-nightly").expect("secret with the webhook");
    assert!(secret["data"]["NOTIFY_URL"].is_string());
    let cj = e.server.object("batch/v1", "CronJob", Some("kdeploy"), "drift-schedule-nightly").expect("cronjob");
    assert_eq!(cj["spec"]["schedule"], "17 3 * * *");
    let c = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["args"], json!(["-C", "/stack", "drift", "--detailed-exitcode", "--notify", "$(NOTIFY_URL)"]));
    assert_eq!(c["image"], json!(kdeploy_provider::images::kdeploy()), "the release image of the running kdeploy by default");
    assert_eq!(cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"], "drift-schedule-nightly");
    let cm = e.server.object("v1", "ConfigMap", Some("kdeploy"), "drift-schedule-nightly-stack").unwrap();
    assert_eq!(cm["data"]["main.hcl"], json!(text));
    for ns in ["kerberos-agent", "kerberos-vault"] {
        let role = e.server.object("rbac.authorization.k8s.io/v1", "Role", Some(ns), "drift-schedule-nightly-read").unwrap_or_else(|| panic!("role in {ns}"));
        for rule in role["rules"].as_array().unwrap() {
            assert_eq!(rule["verbs"], json!(["get", "list"]), "read-only: {rule}");
        }
        assert!(e.server.object("rbac.authorization.k8s.io/v1", "RoleBinding", Some(ns), "drift-schedule-nightly-read").is_some());
    }
    assert!(e.server.object("rbac.authorization.k8s.io/v1", "Role", Some("mongodb"), "drift-schedule-nightly-read").is_none(), "only the namespaces given");
    assert_eq!(run_with(e.s.path(), providers(), &["plan", "--detailed-exitcode"], vars.clone(), "").code, 0);
    // The image can be overridden (a mirror, a fork's build).
    e.s.write("main.hcl", &text.replace("  files      =", "  image      = \"registry.example.com/kdeploy:0.1.0\"\n  files      ="));
    let r = run_with(e.s.path(), providers(), &["apply", "--auto-approve"], vars.clone(), "");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let cj = e.server.object("batch/v1", "CronJob", Some("kdeploy"), "drift-schedule-nightly").expect("cronjob");
    assert_eq!(cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"], "registry.example.com/kdeploy:0.1.0");
    let r = run_with(e.s.path(), providers(), &["destroy", "--auto-approve"], vars, "");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(e.server.object("batch/v1", "CronJob", Some("kdeploy"), "drift-schedule-nightly").is_none());
}

#[test]
fn drift_schedule_reads_the_namespaces_of_the_stacks_components_on_its_cluster() {
    let (central, edge) = (TestServer::start(Options::default()), TestServer::start(Options::default()));
    let s = TestStack::new(&[]);
    let kubeconfig = |server: &TestServer, name: &str| server.write_kubeconfig(&s.path().join(name), "test").display().to_string();
    let (central_kc, edge_kc) = (kubeconfig(&central, "central"), kubeconfig(&edge, "edge"));
    s.write(
        "main.hcl",
        &format!(
            r#"{central}
cluster "edge" {{
  type       = "kubernetes"
  kubeconfig = "{edge_kc}"
  context    = "test"
}}

vault "main" {{
  cluster   = cluster.central
  namespace = "vault-site"
  database  = database.meta
  storage   = object_storage.recordings
}}

broker "live" {{
  cluster = cluster.edge
  type    = "mosquitto"
}}

agent "cam" {{
  for_each = toset(["front", "back"])
  cluster  = cluster.central
  vault    = vault.main
  rtsp_url = "rtsp://10.0.0.1/${{each.key}}"
}}

drift_schedule "nightly" {{
  cluster  = cluster.central
  schedule = "17 3 * * *"
  files    = {{ "main.hcl" = "" }}
}}
"#,
            central = crate::support::central_services(&format!("\"{central_kc}\""))
        ),
    );
    let plan = crate::support::run_binary(s.path(), &[], &["plan", "-json"]);
    assert_eq!(plan.code, 0, "{}", plan.text());
    let parsed: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap_or_else(|e| panic!("{e}: {}", plan.text()));
    let drift = parsed["resource_changes"].as_array().unwrap().iter().find(|c| c["address"] == "drift_schedule.nightly").cloned().expect("planned");
    // Its own, MongoDB's, MinIO's, the Vault's own and the agents'; not the broker's on the
    // other cluster, nor those of kinds the stack does not use.
    assert_eq!(drift["change"]["after"]["namespaces"], json!(["kdeploy", "kerberos-agent", "minio", "mongodb", "vault-site"]), "{drift}");
}

/// The example stacks, applied to the test API server, then checked with `kdeploy drift`: no
/// false positives right after apply, and exact reports of real out-of-band changes.
#[test]
fn example_stacks_apply_and_show_no_drift_until_something_changes() {
    for example in ["kubernetes", "microk8s"] {
        let e = env(Options { storage_classes: vec![("microk8s-hostpath".into(), true)], ..Options::default() });
        // MicroK8s' DNS add-on, as `microk8s enable dns` leaves it.
        e.server.put_object(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", "namespace": "kube-system"}, "spec": {"ports": [{"port": 53, "protocol": "UDP"}], "selector": {"k8s-app": "kube-dns"}}}));
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(example).join("main.hcl");
        e.s.write("main.hcl", &std::fs::read_to_string(src).unwrap());
        let kc = format!("kubeconfig={}", e.kubeconfig);
        let vars = ["-var", &kc, "-var", "context=test"];
        let with = |args: &[&str]| -> Vec<String> { args.iter().chain(vars.iter()).map(|s| s.to_string()).collect() };
        let run = |args: Vec<String>| {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            kdeploy(&e.s, &refs)
        };
        let r = run(with(&["apply", "--auto-approve"]));
        assert_eq!(r.code, 0, "{example}: {}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("Apply complete! Resources: 9 added"), "{example}: {}", r.stdout);
        let r = run(with(&["drift", "--detailed-exitcode"]));
        assert_eq!(r.code, 0, "{example}: no false positives: {}{}", r.stdout, r.stderr);
        assert_eq!(r.stdout, "No drift: the 9 deployed components match the recorded state.\n");

        // Someone deletes one camera's Deployment and edits the Vault Service by hand.
        e.server.delete_object("apps/v1", "Deployment", Some("kerberos-agent"), "agent-cam-yard");
        e.server.delete_object("v1", "Secret", Some("kerberos-agent"), "agent-cam-yard");
        let mut svc = e.server.object("v1", "Service", Some("kerberos-vault"), "vault-main").unwrap();
        svc["spec"]["ports"][0]["nodePort"] = json!(31999);
        svc["metadata"]["managedFields"] =
            json!([{"manager": "kubectl-edit", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:ports": {}}}}]);
        e.server.put_object(svc);
        let r = run(with(&["drift", "--detailed-exitcode", "--json"]));
        assert_eq!(r.code, 2, "{example}: {}{}", r.stdout, r.stderr);
        let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let drifted: Vec<(String, String)> =
            j["drift"].as_array().unwrap().iter().map(|d| (d["address"].as_str().unwrap().to_string(), d["status"].as_str().unwrap().to_string())).collect();
        assert_eq!(
            drifted,
            [("agent.cam[\"yard\"]".to_string(), "changed".to_string()), ("vault.main".to_string(), "changed".to_string())],
            "{example}: {}",
            r.stdout
        );
        assert_eq!(j["drift"][1]["attributes"][0]["path"], "objects[\"v1/Service/kerberos-vault/vault-main\"]", "{example}: {}", r.stdout);
        // Apply puts it back, and the deployment is quiet again.
        let r = run(with(&["apply", "--auto-approve", "--force-conflicts"]));
        assert_eq!(r.code, 0, "{example}: {}{}", r.stdout, r.stderr);
        assert_eq!(run(with(&["drift", "--detailed-exitcode"])).code, 0, "{example}");
    }
}

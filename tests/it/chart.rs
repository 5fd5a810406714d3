//! Helm charts as components: the real `helm template` renders tests/fixtures/charts/demo (a
//! CRD, a custom resource of it, a ConfigMap, a Deployment, a Service, an optional ConfigMap and
//! a hook), and the built `kdeploy` applies the objects to the test API server itself.
//!
//! Without helm the tests that need it are skipped with a printed reason (they fail instead when
//! CI is set: `.ci/run` installs helm with tests/kube-apiserver/install-helm.sh).

use std::path::PathBuf;

use kdeploy_kube_testserver::{Options, TestServer};
use serde_json::json;

use crate::support::{Out, TestStack, run_binary};

/// The helm to test with: KDEPLOY_HELM, `helm` on PATH, or ~/.local/bin/helm (where the CI
/// script puts it). None (with the reason printed) when there is none; a failure under CI.
pub(crate) fn helm() -> Option<String> {
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/bin/helm"));
    let on_path = std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join("helm")).find(|c| c.is_file()));
    let found = std::env::var("KDEPLOY_HELM").ok().map(PathBuf::from).into_iter().chain(on_path).chain(home).find(|p| p.is_file());
    match found {
        Some(p) => Some(p.display().to_string()),
        None if std::env::var_os("CI").is_some() => panic!("CI is set but helm is not installed (bash tests/kube-apiserver/install-helm.sh)"),
        None => {
            eprintln!("skipping: helm is not installed (KDEPLOY_HELM, PATH, ~/.local/bin/helm); bash tests/kube-apiserver/install-helm.sh installs it");
            None
        }
    }
}

fn demo_chart() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/charts/demo").display().to_string()
}

fn stack(kubeconfig: &str, greeting: &str, extra: bool) -> String {
    format!(
        r#"cluster "k8s" {{
  type       = "kubernetes"
  kubeconfig = "{kubeconfig}"
  context    = "test"
}}

chart "demo" {{
  path              = "{chart}"
  namespace         = "demo"
  readiness_timeout = "20s"
  values = {{
    greeting = "{greeting}"
    replicas = 2
    widget   = {{ size = 5 }}
    extra    = {{ enabled = {extra} }}
  }}
}}
"#,
        chart = demo_chart()
    )
}

struct Env {
    server: TestServer,
    s: TestStack,
    kubeconfig: String,
}

fn env() -> Env {
    let server = TestServer::start(Options::default());
    let s = TestStack::new(&[]);
    let kubeconfig = server.write_kubeconfig(s.path(), "test").display().to_string();
    Env { server, s, kubeconfig }
}

fn kdeploy(e: &Env, helm: &str, args: &[&str]) -> Out {
    run_binary(e.s.path(), &[("KDEPLOY_HELM", helm)], args)
}

fn greeting(e: &Env) -> serde_json::Value {
    e.server.object("v1", "ConfigMap", Some("demo"), "demo-config").expect("the chart's ConfigMap")["data"]["greeting"].clone()
}

#[test]
fn a_chart_is_applied_replanned_changed_drifted_and_pruned_by_kdeploy() {
    let Some(helm) = helm() else { return };
    let e = env();
    e.s.write("main.hcl", &stack(&e.kubeconfig, "from hcl", true));

    // One apply: the CRD first, then the custom resource of it, with the HCL values.
    let r = kdeploy(&e, &helm, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(greeting(&e), "from hcl", "HCL values reach the rendered objects");
    let web = e.server.object("apps/v1", "Deployment", Some("demo"), "demo-web").expect("the chart's Deployment");
    assert_eq!(web["spec"]["replicas"], 2);
    assert_eq!(web["metadata"]["labels"]["app.kubernetes.io/managed-by"], "kdeploy", "kdeploy's, not a Helm release's");
    assert_eq!(web["metadata"]["annotations"]["kdeploy.io/address"], "chart.demo");
    let managers: Vec<&str> = web["metadata"]["managedFields"].as_array().unwrap().iter().filter_map(|m| m["manager"].as_str()).collect();
    assert_eq!(managers, ["kdeploy", "kube-controller-manager"], "written by server-side apply as kdeploy");
    assert!(e.server.object("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, "widgets.demo.kdeploy.io").is_some());
    let widget = e.server.object("demo.kdeploy.io/v1", "Widget", Some("demo"), "demo-widget").expect("the custom resource, in the same apply");
    assert_eq!(widget["spec"]["size"], 5);
    assert!(e.server.object("v1", "ConfigMap", Some("demo"), "demo-extra").is_some());
    assert!(e.server.object("v1", "ConfigMap", Some("demo"), "demo-hook").is_none(), "Helm hooks are not run");

    // Unchanged version and values: no changes, decided without helm (a missing helm would fail).
    let r = kdeploy(&e, "/nonexistent/helm", &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("No changes."), "{}", r.stdout);

    // A values change: an update of the one object it affects.
    e.s.write("main.hcl", &stack(&e.kubeconfig, "changed", true));
    let r = kdeploy(&e, &helm, &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(r.stdout.contains("# chart.demo will be updated in place"), "{}", r.stdout);
    // The objects map before -> after: the digest of each object's owned fields.
    let mut digests: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> = Default::default();
    for line in r.stdout.lines().filter(|l| l.trim_start().starts_with("\"") && l.contains(" = \"")) {
        let (key, digest) = line.trim().split_once(" = ").unwrap();
        digests.entry(key.trim()).or_default().insert(digest);
    }
    let changed: Vec<&str> = digests.iter().filter(|(_, d)| d.len() > 1).map(|(k, _)| *k).collect();
    assert_eq!(changed, ["\"v1/ConfigMap/demo/demo-config\""], "only the ConfigMap the value reaches changes: {}", r.stdout);
    assert_eq!(digests.len(), 6, "{}", r.stdout);
    let r = kdeploy(&e, &helm, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(greeting(&e), "changed");

    // An edit outside kdeploy of a rendered object is drift.
    let mut cm = e.server.object("v1", "ConfigMap", Some("demo"), "demo-config").unwrap();
    cm["data"]["greeting"] = json!("edited by hand");
    e.server.put_object(cm);
    let r = kdeploy(&e, &helm, &["drift", "--detailed-exitcode"]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(r.stdout.contains("chart.demo"), "{}", r.stdout);
    let r = kdeploy(&e, &helm, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(greeting(&e), "changed", "apply puts it back");

    // The chart stops rendering an object (a value disables it): apply deletes it.
    e.s.write("main.hcl", &stack(&e.kubeconfig, "changed", false));
    let r = kdeploy(&e, &helm, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(e.server.object("v1", "ConfigMap", Some("demo"), "demo-extra").is_none(), "pruned");
    assert!(e.server.object("v1", "ConfigMap", Some("demo"), "demo-config").is_some());
    let r = kdeploy(&e, "/nonexistent/helm", &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());

    // Destroy removes the custom resource and the CRD too.
    let r = kdeploy(&e, &helm, &["destroy", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(e.server.object("demo.kdeploy.io/v1", "Widget", Some("demo"), "demo-widget").is_none());
    assert!(e.server.object("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, "widgets.demo.kdeploy.io").is_none());
    assert!(e.server.object("apps/v1", "Deployment", Some("demo"), "demo-web").is_none());
}

#[test]
fn a_chart_without_helm_is_a_clear_error_at_plan() {
    let e = env();
    e.s.write("main.hcl", &stack(&e.kubeconfig, "hi", true));
    // No KDEPLOY_HELM, and a PATH without helm.
    let r = run_binary(e.s.path(), &[("KDEPLOY_HELM", ""), ("PATH", "/nonexistent")], &["plan"]);
    assert_eq!(r.code, 1, "{}", r.text());
    let text = r.text();
    assert!(text.contains("chart.demo: helm was not found (no helm on PATH)"), "{text}");
    assert!(text.contains("install helm 3 or later (https://helm.sh/docs/intro/install/"), "{text}");
    assert!(text.contains("KDEPLOY_HELM"), "{text}");
}

/// A cluster with MongoDB, MinIO and a Vault on it: `charts` (blocks) before the Vault, `vault`
/// (lines) added to its block.
fn vault_stack(kubeconfig: &str, charts: &str, vault: &str) -> String {
    format!(
        r#"cluster "k8s" {{
  type       = "kubernetes"
  kubeconfig = "{kubeconfig}"
  context    = "test"
}}

database "meta" {{
  type = "mongodb"
}}

object_storage "rec" {{
  type = "minio"
}}
{charts}
vault "main" {{
  database = database.meta
  storage  = object_storage.rec
{vault}}}
"#
    )
}

/// A Vault behind a LoadBalancer Service, and (`metallb`) a chart installing MetalLB's
/// IPAddressPool CRD, with a pool when `addresses` is not empty, which the Vault depends on.
fn balanced_stack(kubeconfig: &str, metallb: Option<&str>) -> String {
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/charts/metallb").display().to_string();
    let (block, depends) = match metallb {
        Some(addresses) => (
            format!("chart \"metallb\" {{\n  path      = \"{chart}\"\n  namespace = \"metallb-system\"\n  values    = {{ addresses = \"{addresses}\" }}\n}}\n"),
            "  depends_on   = [chart.metallb]\n",
        ),
        None => (String::new(), ""),
    };
    vault_stack(kubeconfig, &block, &format!("  service_type = \"LoadBalancer\"\n{depends}"))
}

#[test]
fn a_load_balancer_that_would_stay_pending_is_reported_by_plan_with_what_to_install() {
    let Some(helm) = helm() else { return };
    let e = env();
    let pending = "Warning: vault.main: Service kerberos-vault/vault-main of type LoadBalancer would stay pending";

    // A bare cluster: no LoadBalancer Service has an address, its node has no cloud provider,
    // and no implementation is installed.
    e.s.write("main.hcl", &balanced_stack(&e.kubeconfig, None));
    let r = kdeploy(&e, &helm, &["plan", "-no-color", "-detailed-exitcode"]);
    assert_eq!(r.code, 2, "a warning does not stop the plan: {}", r.text());
    assert!(r.stdout.contains(&format!("{pending}: the cluster has no load-balancer implementation")), "{}", r.text());
    assert!(
        r.stdout.contains("alternatively, set service_type = \"NodePort\" (reached on the cluster's node address)\n  on main.hcl:15:1\n"),
        "where: {}",
        r.text()
    );
    assert!(r.stdout.contains("`microk8s enable metallb:FIRST_IP-LAST_IP`") && r.stdout.contains("set service_type = \"NodePort\""), "{}", r.text());
    let json = kdeploy(&e, &helm, &["plan", "-json"]);
    assert!(
        json.stdout.contains("vault.main: Service kerberos-vault/vault-main of type LoadBalancer would stay pending"),
        "in the machine-readable plan: {}",
        json.text()
    );

    // A chart the Vault depends on installs MetalLB: planned first, it answers the question.
    e.s.write("main.hcl", &balanced_stack(&e.kubeconfig, Some("")));
    let r = kdeploy(&e, &helm, &["plan", "-no-color"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(!r.stdout.contains("would stay pending"), "chart.metallb installs MetalLB: {}", r.text());

    // Installed, but without an address pool: MetalLB gives no Service an address.
    let r = kdeploy(&e, &helm, &["apply", "-auto-approve", "-target", "chart.metallb"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let r = kdeploy(&e, &helm, &["plan", "-no-color"]);
    assert!(r.stdout.contains(&format!("{pending}: MetalLB is installed but has no IPAddressPool (metallb.io/v1beta1)")), "the pool it lacks: {}", r.text());

    // With a pool, whoever installed it (here, by hand): no warning, and the apply gets the address.
    e.server.put_object(json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "default", "namespace": "metallb-system"},
        "spec": {"addresses": ["192.0.2.40-192.0.2.49"]}}));
    let r = kdeploy(&e, &helm, &["plan", "-no-color"]);
    assert!(!r.stdout.contains("would stay pending"), "{}", r.text());

    // Without the pool, a LoadBalancer Service that got an address shows that something gives them.
    e.server.delete_object("metallb.io/v1beta1", "IPAddressPool", Some("metallb-system"), "default");
    assert!(kdeploy(&e, &helm, &["plan", "-no-color"]).stdout.contains("would stay pending"), "the pool was the only sign");
    e.server.put_object(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ingress", "namespace": "default"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}, "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.99"}]}}}));
    let r = kdeploy(&e, &helm, &["plan", "-no-color"]);
    assert!(!r.stdout.contains("would stay pending"), "{}", r.text());
    e.server.delete_object("v1", "Service", Some("default"), "ingress");

    // Credentials that may not list Nodes: kdeploy cannot tell, and says nothing.
    e.server.set_forbidden(vec![("list".into(), "nodes".into(), None)]);
    let r = kdeploy(&e, &helm, &["plan", "-no-color"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(!r.stdout.contains("would stay pending"), "{}", r.text());
    e.server.set_forbidden(vec![]);

    // A cluster whose nodes a cloud controller runs (EKS here) has one too.
    let cloud = crate::support::managed_cluster();
    let s = TestStack::new(&[]);
    let kubeconfig = cloud.write_kubeconfig(s.path(), "test").display().to_string();
    s.write("main.hcl", &balanced_stack(&kubeconfig, None));
    let r = run_binary(s.path(), &[("KDEPLOY_HELM", &helm)], &["plan", "-no-color"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("+ vault.main") || r.stdout.contains("vault.main will be created"), "{}", r.text());
    assert!(!r.stdout.contains("would stay pending"), "{}", r.text());
}

/// A Vault behind an Ingress (`ingress` is added to its block), and (`cert_manager`) a chart
/// installing cert-manager's ClusterIssuer CRD.
fn ingress_stack(kubeconfig: &str, ingress: &str, cert_manager: bool) -> String {
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/charts/cert-manager").display().to_string();
    let block = if cert_manager { format!("chart \"cert_manager\" {{\n  path = \"{chart}\"\n}}\n") } else { String::new() };
    vault_stack(kubeconfig, &block, &format!("  ingress_host = \"vault.example.com\"\n{ingress}"))
}

#[test]
fn what_an_ingress_needs_from_its_cluster_is_reported_by_plan() {
    let Some(helm) = helm() else { return };
    let e = env();
    let plan = |e: &Env| {
        let r = kdeploy(e, &helm, &["plan", "-no-color"]);
        assert_eq!(r.code, 0, "warnings do not stop the plan: {}", r.text());
        r.stdout.lines().filter(|l| l.starts_with("Warning: vault.main: ")).map(str::to_string).collect::<Vec<_>>()
    };

    // A bare cluster: no ingress controller, no cert-manager.
    e.s.write("main.hcl", &ingress_stack(&e.kubeconfig, "  cert_issuer  = \"letsencrypt\"\n", false));
    let w = plan(&e);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].starts_with("Warning: vault.main: The cluster has no IngressClass (no ingress controller): the Ingress for vault.example.com would not be served"),
        "{w:?}"
    );
    assert!(w[0].contains("microk8s enable ingress"), "{w:?}");
    assert!(w[1].starts_with("Warning: vault.main: cert-manager is not installed"), "{w:?}");

    // A controller whose class is not the default: name it, or mark it.
    e.server.put_object(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "public"}, "spec": {"controller": "k8s.io/ingress-nginx"}}),
    );
    let w = plan(&e);
    assert!(w[0].contains("The cluster has no default IngressClass, and ingress_class is not set") && w[0].contains("one of public"), "{w:?}");
    e.s.write("main.hcl", &ingress_stack(&e.kubeconfig, "  ingress_class = \"nginx\"\n  cert_issuer  = \"letsencrypt\"\n", false));
    assert!(plan(&e)[0].contains("IngressClass \"nginx\" does not exist") && plan(&e)[0].contains("(public)"), "{:?}", plan(&e));

    // cert-manager installed (its CRD, by a chart), then its ClusterIssuer.
    e.s.write("main.hcl", &ingress_stack(&e.kubeconfig, "  ingress_class = \"public\"\n  cert_issuer  = \"letsencrypt\"\n", true));
    let r = kdeploy(&e, &helm, &["apply", "-auto-approve", "-target", "chart.cert_manager"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let w = plan(&e);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("Warning: vault.main: ClusterIssuer \"letsencrypt\" does not exist"), "{w:?}");
    e.server.put_object(json!({"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer", "metadata": {"name": "letsencrypt"}, "spec": {"acme": {}}}));
    assert_eq!(plan(&e), Vec::<String>::new());

    // A certificate of one's own: its Secret must exist.
    e.s.write("main.hcl", &ingress_stack(&e.kubeconfig, "  ingress_class      = \"public\"\n  ingress_tls_secret = \"vault-cert\"\n", true));
    let w = plan(&e);
    assert!(w.len() == 1 && w[0].contains("Secret kerberos-vault/vault-cert (ingress_tls_secret) does not exist"), "{w:?}");
    e.server.put_object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kerberos-vault"}}));
    e.server.put_object(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": "vault-cert", "namespace": "kerberos-vault"},
        "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}}),
    );
    assert_eq!(plan(&e), Vec::<String>::new());
}

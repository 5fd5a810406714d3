//! Reliability and security through the real binary, the way users meet them: environment
//! variables read by the binary, crash recovery after `kill -9` on the cluster the component
//! runs on, interrupted creates that leave the stack, a broken lock whose holder still runs,
//! edge values that used to panic or hang, a frozen S3 endpoint.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use kdeploy_kube_testserver::{Options, TestServer};

use crate::support::{Out, TestStack, binary, kill9, run_binary, run_limited, vault_standin, wait_for};

fn state_json(dir: &Path) -> serde_json::Value {
    std::fs::read(dir.join(".kdeploy/state.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// Whether the state as kdeploy reads it (`state pull`: the state file with the journal of an
/// apply in progress replayed over it) has a pending operation on `address`.
fn pending(dir: &Path, address: &str) -> bool {
    let r = run_binary(dir, &[], &["state", "pull"]);
    let st: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_default();
    st["pending"].as_array().is_some_and(|p| p.iter().any(|op| op["address"] == address))
}

fn assert_clean_failure(r: &Out, what: &str) {
    assert_eq!(r.code, 1, "{what}: {}", r.text());
    assert!(!r.stderr.contains("panicked") && !r.stderr.contains("RUST_BACKTRACE"), "{what} must not panic: {}", r.text());
}

// ------------------------------------------------------------------ environment variables

/// A stack with one sensitive value and no cluster: the `external` provider applies it.
const SECRET_STACK: &str = r#"database "ext" {
  type = "external"
  uri  = "mongodb://kerberos:very-secret-password@db.example.com:27017/admin"
}
"#;

#[test]
fn the_state_key_from_the_environment_encrypts_state_written_by_the_binary() {
    for via_file in [false, true] {
        let s = TestStack::new(&[("main.hcl", SECRET_STACK)]);
        let key_file = s.path().join("state.key");
        std::fs::write(&key_file, "0123456789abcdef0123456789abcdef").unwrap();
        let key_file = key_file.display().to_string();
        let env: Vec<(&str, &str)> =
            if via_file { vec![("KDEPLOY_STATE_KEY_FILE", &key_file)] } else { vec![("KDEPLOY_STATE_KEY", "0123456789abcdef0123456789abcdef")] };
        let r = run_binary(s.path(), &env, &["apply", "-auto-approve"]);
        assert_eq!(r.code, 0, "{}", r.text());
        // A second write, so that a backup exists too.
        s.write("main.hcl", &SECRET_STACK.replace("27017", "27018"));
        assert_eq!(run_binary(s.path(), &env, &["apply", "-auto-approve"]).code, 0);
        for f in ["state.json", "state.json.backup"] {
            let text = std::fs::read_to_string(s.path().join(".kdeploy").join(f)).unwrap();
            assert!(!text.contains("very-secret-password"), "{f} holds the secret in clear (key from {}):\n{text}", env[0].0);
            assert!(text.contains("\"encryption\""), "{f}");
        }
        // With the key the state reads; without it the secret stays hidden and nothing breaks.
        let r = run_binary(s.path(), &env, &["plan", "-detailed-exitcode"]);
        assert_eq!(r.code, 0, "{}", r.text());
        let r = run_binary(s.path(), &[], &["state", "show", "database.ext"]);
        assert!(r.code == 0 && r.stdout.contains("host") && !r.stdout.contains("very-secret"), "{}", r.text());
        let r = run_binary(s.path(), &[], &["state", "pull"]);
        assert!(r.code == 0 && !r.stdout.contains("very-secret"), "{}", r.text());
    }
    // Without a key: in clear, as documented.
    let s = TestStack::new(&[("main.hcl", SECRET_STACK)]);
    assert_eq!(run_binary(s.path(), &[], &["apply", "-auto-approve"]).code, 0);
    assert!(std::fs::read_to_string(s.state_path()).unwrap().contains("very-secret-password"));
}

#[test]
fn root_variables_come_from_kdeploy_var_in_the_binary() {
    let s = TestStack::new(&[("main.hcl", "variable \"port\" {\n  type = number\n}\n\noutput \"port\" {\n  value = var.port\n}\n")]);
    let r = run_binary(s.path(), &[("KDEPLOY_VAR_port", "27019")], &["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(run_binary(s.path(), &[], &["output", "-raw", "port"]).stdout.trim_end(), "27019");
}

#[test]
fn no_color_turns_colour_off_on_a_terminal() {
    if std::process::Command::new("script").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI is set but `script` (util-linux) is missing");
        eprintln!("skipping: `script` (util-linux) is needed to give kdeploy a terminal");
        return;
    }
    let s = TestStack::new(&[("main.hcl", SECRET_STACK)]);
    let run_on_tty = |no_color: bool| -> String {
        let cmd = format!("{} -C {} plan", env!("CARGO_BIN_EXE_kdeploy"), s.path().display());
        let mut c = std::process::Command::new("script");
        c.args(["-qec", &cmd, "/dev/null"]).env_remove("NO_COLOR");
        if no_color {
            c.env("NO_COLOR", "1");
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    };
    assert!(run_on_tty(false).contains("\x1b["), "colour on a terminal");
    let plain = run_on_tty(true);
    assert!(!plain.contains("\x1b[") && plain.contains("Plan: 1 to add"), "{plain}");
}

/// README's table lists exactly the variables kdeploy reads (src/env.rs), and each is read by
/// the real binary in a test: the engine's in this file, the libraries' in the tests named.
#[test]
fn every_documented_environment_variable_is_read_by_the_binary_in_a_test() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let table = readme.split("## Environment variables").nth(1).unwrap().split("\n## ").next().unwrap();
    let mut documented: Vec<String> = Vec::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('|').nth(1).unwrap();
        if row.contains("**tests only**") {
            continue;
        }
        documented.extend(first.split('`').skip(1).step_by(2).map(|v| v.replace("<name>", "*")).filter(|v| v != "IDENTITY_ENDPOINT"));
    }
    documented.sort();
    let mut known: Vec<String> = kdeploy::env::VARS.iter().map(|v| v.name.to_string()).collect();
    known.sort();
    assert_eq!(documented, known, "README's environment table and src/env.rs disagree");
    // Where each is read by the binary.
    let tested: BTreeMap<&str, &str> = [
        ("KDEPLOY_VAR_*", "reliability::root_variables_come_from_kdeploy_var_in_the_binary"),
        ("NO_COLOR", "reliability::no_color_turns_colour_off_on_a_terminal"),
        ("KDEPLOY_STATE_KEY", "reliability::the_state_key_from_the_environment_encrypts_state_written_by_the_binary"),
        ("KDEPLOY_STATE_KEY_FILE", "reliability::the_state_key_from_the_environment_encrypts_state_written_by_the_binary"),
        ("KUBECONFIG", "reliability::kubeconfig_and_docker_host_from_the_environment"),
        ("KDEPLOY_HELM", "chart::a_chart_is_applied_replanned_changed_drifted_and_pruned_by_kdeploy"),
        ("DOCKER_HOST", "reliability::kubeconfig_and_docker_host_from_the_environment"),
        ("DOCKER_TLS_VERIFY", "reliability::kubeconfig_and_docker_host_from_the_environment"),
        ("DOCKER_CERT_PATH", "reliability::kubeconfig_and_docker_host_from_the_environment"),
        ("AWS_*", "aws::eks_and_s3_lifecycle_against_moto"),
        ("AZURE_SUBSCRIPTION_ID", "azure::aks_and_blob_lifecycle_against_the_arm_mock"),
        ("AZURE_ACCESS_TOKEN", "azure::aks_and_blob_lifecycle_against_the_arm_mock"),
        ("AZURE_RESOURCE_MANAGER_ENDPOINT", "azure::aks_and_blob_lifecycle_against_the_arm_mock"),
        ("AZURE_TENANT_ID", "azure::service_principal_and_workload_identity_sign_in_from_the_cli"),
        ("AZURE_CLIENT_ID", "azure::service_principal_and_workload_identity_sign_in_from_the_cli"),
        ("AZURE_CLIENT_SECRET", "azure::service_principal_and_workload_identity_sign_in_from_the_cli"),
        ("AZURE_FEDERATED_TOKEN_FILE", "azure::service_principal_and_workload_identity_sign_in_from_the_cli"),
        ("AZURE_USE_MANAGED_IDENTITY", "azure::service_principal_and_workload_identity_sign_in_from_the_cli"),
        ("AZURE_AUTHORITY_HOST", "azure::service_principal_and_workload_identity_sign_in_from_the_cli"),
        ("GOOGLE_OAUTH_ACCESS_TOKEN", "gcp::gke_and_gcs_lifecycle_against_the_mock_apis"),
        ("GOOGLE_APPLICATION_CREDENTIALS", "gcp::workload_identity_federation_credentials_from_ci_drive_the_apply"),
        ("KDEPLOY_GCP_CONTAINER_URL", "gcp::gke_and_gcs_lifecycle_against_the_mock_apis"),
        ("KDEPLOY_GCP_STORAGE_URL", "gcp::gke_and_gcs_lifecycle_against_the_mock_apis"),
        ("KDEPLOY_GCP_IAM_URL", "gcp::gke_and_gcs_lifecycle_against_the_mock_apis"),
        ("KDEPLOY_GCP_POLL_INTERVAL", "gcp::gke_and_gcs_lifecycle_against_the_mock_apis"),
    ]
    .into();
    for v in &known {
        assert!(tested.contains_key(v.as_str()), "{v} is read by the binary in no test");
    }
    // The tests named exist in this binary's sources.
    let sources: String = ["aws.rs", "azure.rs", "chart.rs", "gcp.rs", "reliability.rs"]
        .iter()
        .map(|f| std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it").join(f)).unwrap())
        .collect();
    for (v, t) in &tested {
        let name = t.rsplit("::").next().unwrap();
        assert!(sources.contains(&format!("fn {name}(")), "{v}: no test {t}");
    }
}

#[test]
fn kubeconfig_and_docker_host_from_the_environment() {
    // KUBECONFIG: a cluster without a kubeconfig attribute uses it.
    let server = TestServer::start(Options::default());
    let s = TestStack::new(&[("main.hcl", "cluster \"k\" {\n  type    = \"kubernetes\"\n  context = \"test\"\n}\n")]);
    let kubeconfig = server.write_kubeconfig(s.path(), "test").display().to_string();
    let home = s.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let home = home.display().to_string();
    let r = run_binary(s.path(), &[("HOME", &home), ("KUBECONFIG", "")], &["plan"]);
    assert_clean_failure(&r, "without KUBECONFIG");
    assert!(r.stderr.contains("cannot read the kubeconfig"), "{}", r.text());
    let r = run_binary(s.path(), &[("HOME", &home), ("KUBECONFIG", &kubeconfig)], &["plan"]);
    assert_eq!(r.code, 0, "{}", r.text());
    // DOCKER_HOST (and its TLS settings): a cluster without a host attribute uses them.
    let s = TestStack::new(&[("main.hcl", "cluster \"d\" {\n  type = \"docker\"\n}\n")]);
    let r = run_binary(s.path(), &[("DOCKER_HOST", "tcp://127.0.0.1:1")], &["plan"]);
    assert_clean_failure(&r, "a dead DOCKER_HOST");
    assert!(r.stderr.contains("cannot reach the Docker engine at tcp://127.0.0.1:1"), "{}", r.text());
    let certs = s.path().join("no-certs").display().to_string();
    let r = run_binary(s.path(), &[("DOCKER_HOST", "tcp://127.0.0.1:1"), ("DOCKER_TLS_VERIFY", "1"), ("DOCKER_CERT_PATH", &certs)], &["plan"]);
    assert_clean_failure(&r, "TLS without certificates");
    assert!(r.stderr.contains(&certs), "the certificate path is named: {}", r.text());
}

// ------------------------------------------------------------------ edge values

#[test]
fn edge_values_are_clear_errors_never_panics_or_hangs() {
    let s = TestStack::new(&[("main.hcl", SECRET_STACK)]);
    // Numbers out of range.
    let cases: Vec<(&str, &str, Vec<&str>, &str)> = vec![
        (
            "count = 1e12",
            "database \"x\" {\n  count = 1e12\n  type  = \"external\"\n  uri   = \"mongodb://h/db\"\n}\n",
            vec!["validate"],
            "count must be at most 100000",
        ),
        (
            "file(\"/dev/zero\")",
            "database \"x\" {\n  type = \"external\"\n  uri  = file(\"/dev/zero\")\n}\n",
            vec!["validate"],
            "/dev/zero is a character device, not a regular file",
        ),
        ("-var-file /dev/zero", SECRET_STACK, vec!["plan", "-var-file", "/dev/zero"], "/dev/zero is a character device"),
        ("show /dev/zero", SECRET_STACK, vec!["show", "/dev/zero"], "/dev/zero is a character device"),
        ("--lock-timeout 99999999999999999999h", SECRET_STACK, vec!["plan", "-lock-timeout", "99999999999999999999h"], "invalid duration"),
        (
            "lock_ttl = 1e30 (s3)",
            "stack \"x\" {\n  backend \"s3\" {\n    bucket   = \"b\"\n    key      = \"k\"\n    region   = \"eu-west-1\"\n    lock_ttl = \"1e30\"\n  }\n}\n",
            vec!["plan"],
            "lock_ttl",
        ),
        (
            "lock_ttl = inf (kubernetes)",
            "stack \"x\" {\n  backend \"kubernetes\" {\n    secret_suffix = \"x\"\n    lock_ttl      = \"inf\"\n  }\n}\n",
            vec!["plan"],
            "lock_ttl",
        ),
        (
            "lock_ttl = 2^64 (s3)",
            "stack \"x\" {\n  backend \"s3\" {\n    bucket   = \"b\"\n    key      = \"k\"\n    region   = \"eu-west-1\"\n    lock_ttl = \"18446744073709551616\"\n  }\n}\n",
            vec!["plan"],
            "lock_ttl",
        ),
        (
            "readiness_timeout = 1e400",
            "database \"x\" {\n  type = \"external\"\n  uri  = \"mongodb://h/db\"\n}\n\ncluster \"d\" {\n  type = \"docker\"\n}\n\nobject_storage \"m\" {\n  type              = \"minio\"\n  readiness_timeout = 1e400\n}\n",
            vec!["validate"],
            "readiness_timeout",
        ),
    ];
    for (what, stack, args, expect) in cases {
        s.write("main.hcl", stack);
        let r = run_limited(s.path(), &[], &args, 60);
        assert_clean_failure(&r, what);
        assert!(r.stderr.contains(expect), "{what}: {}", r.text());
    }
    // A state file that is a FIFO (reading it would block forever) or a directory.
    let st = TestStack::new(&[("main.hcl", SECRET_STACK)]);
    std::fs::create_dir_all(st.path().join(".kdeploy")).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(st.path().join(".kdeploy/state.json")).status().unwrap().success());
    for cmd in [&["plan"][..], &["state", "list"][..]] {
        let r = run_limited(st.path(), &[], cmd, 60);
        assert_clean_failure(&r, "a FIFO as the state file");
        assert!(r.stderr.contains("state.json: it is not a regular file"), "{cmd:?}: {}", r.text());
    }
    // A FIFO, a dangling symlink and a directory named like stack files: errors, never skipped.
    let dir = TestStack::new(&[("main.hcl", SECRET_STACK)]);
    assert!(std::process::Command::new("mkfifo").arg(dir.path().join("pipe.hcl")).status().unwrap().success());
    std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("dangling.hcl")).unwrap();
    std::fs::create_dir(dir.path().join("folder.hcl")).unwrap();
    for cmd in [&["validate"][..], &["plan"][..]] {
        let r = run_limited(dir.path(), &[], cmd, 60);
        assert_clean_failure(&r, "unreadable stack files");
        for name in ["pipe.hcl is a FIFO", "dangling.hcl is a symbolic link whose target does not exist", "folder.hcl is a directory"] {
            assert!(r.stderr.contains(name), "{cmd:?} names {name}: {}", r.text());
        }
    }
}

#[test]
fn a_state_at_its_largest_serial_or_of_the_wrong_shape_is_a_clear_error() {
    let s = TestStack::new(&[("main.hcl", SECRET_STACK)]);
    assert_eq!(run_binary(s.path(), &[], &["apply", "-auto-approve"]).code, 0);
    let mut st = state_json(s.path());
    st["serial"] = serde_json::json!(u64::MAX);
    std::fs::write(s.state_path(), serde_json::to_vec(&st).unwrap()).unwrap();
    let pulled = s.path().join("pulled.json");
    std::fs::write(&pulled, serde_json::to_vec(&st).unwrap()).unwrap();
    for args in
        [&["state", "rm", "database.ext"][..], &["state", "push", pulled.to_str().unwrap()][..], &["apply", "-auto-approve", "-replace", "database.ext"][..]]
    {
        let r = run_limited(s.path(), &[], args, 60);
        assert_clean_failure(&r, &format!("{args:?}"));
        assert!(r.stderr.contains("the largest there is"), "{args:?}: {}", r.text());
    }
    // A value of the wrong type: the field, the expected type and the file are named.
    st["serial"] = serde_json::json!("7");
    std::fs::write(s.state_path(), serde_json::to_vec(&st).unwrap()).unwrap();
    let r = run_limited(s.path(), &[], &["state", "list"], 60);
    assert_clean_failure(&r, "serial as a string");
    assert!(r.stderr.contains("the field `serial` must be a non-negative integer, found a string") && r.stderr.contains(".kdeploy/state.json"), "{}", r.text());
    // A recorded address that is not one: one decode error naming the file, its line and the
    // address, for every command that reads the state (before, plan skipped it silently).
    st["serial"] = serde_json::json!(7);
    st["resources"][0]["address"] = serde_json::json!("camera.front");
    std::fs::write(s.state_path(), serde_json::to_vec(&st).unwrap()).unwrap();
    for args in [&["state", "list"][..], &["plan"][..]] {
        let r = run_limited(s.path(), &[], args, 60);
        assert_clean_failure(&r, &format!("{args:?} with a bad address"));
        assert!(
            r.stderr.contains(".kdeploy/state.json at line 1") && r.stderr.contains("invalid address \"camera.front\": \"camera\" is not a component kind"),
            "{args:?}: {}",
            r.text()
        );
    }
}

#[test]
fn a_frozen_s3_backend_fails_within_its_timeout() {
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in listener.incoming().take(16) {
            conns.push(c);
        }
        std::thread::sleep(Duration::from_secs(60));
    });
    let stack = format!(
        "stack \"x\" {{\n  backend \"s3\" {{\n    bucket     = \"b\"\n    key        = \"k\"\n    region     = \"eu-west-1\"\n    endpoint   = \"http://127.0.0.1:{port}\"\n    access_key = \"a\"\n    secret_key = \"s\"\n    timeout    = \"2s\"\n  }}\n}}\n\n{SECRET_STACK}"
    );
    let s = TestStack::new(&[("main.hcl", &stack)]);
    let r = run_limited(s.path(), &[], &["plan"], 45);
    assert_clean_failure(&r, "a frozen S3 endpoint");
    assert!(r.stderr.contains("no answer within the backend's timeout (setting `timeout`"), "{}", r.text());
    drop(held);
}

// ------------------------------------------------------------------ crash recovery

/// Components that take a while to become ready on the test API server, on a cluster reached
/// only through the cluster block's kubeconfig and context.
fn k8s_stack(kubeconfig: &str, cams: &[&str], extra_cluster: Option<&str>, agent_ns: Option<&str>) -> String {
    let cams: Vec<String> = cams.iter().map(|c| format!("\"{c}\"")).collect();
    let ns = agent_ns.map(|n| format!("  namespace         = \"{n}\"\n")).unwrap_or_default();
    let second = extra_cluster
        .map(|k| format!("cluster \"other\" {{\n  type       = \"kubernetes\"\n  kubeconfig = \"{k}\"\n  context    = \"test\"\n}}\n"))
        .unwrap_or_default();
    format!(
        r#"stack "crash" {{}}

cluster "edge" {{
  type       = "kubernetes"
  kubeconfig = "{kubeconfig}"
  context    = "test"
}}

{second}
database "ext" {{
  type = "external"
  uri  = "mongodb://u:p@mongo.example.com:27017/admin"
}}

object_storage "ceph" {{
  type       = "external"
  endpoint   = "ceph.example.com:7480"
  bucket     = "recordings"
  access_key = "AK"
  secret_key = "SK"
}}

vault "main" {{
  cluster           = cluster.edge
  database          = database.ext
  storage           = object_storage.ceph
  readiness_timeout = "30s"
}}

agent "cam" {{
{ns}  for_each          = toset([{cams}])
  cluster           = cluster.edge
  vault             = vault.main
  rtsp_url          = "rtsp://10.0.0.1/${{each.key}}"
  readiness_timeout = "30s"
}}
"#,
        cams = cams.join(", ")
    )
}

struct K8sCrash {
    server: TestServer,
    s: TestStack,
    kubeconfig: String,
    home: String,
}

impl K8sCrash {
    fn new() -> K8sCrash {
        let server = TestServer::start(Options { ready_after: Some(Duration::from_millis(2500)), ..Options::default() });
        vault_standin(&server, "kerberos-vault", "vault-main", Default::default());
        let s = TestStack::new(&[]);
        let kubeconfig = server.write_kubeconfig(s.path(), "test").display().to_string();
        // No ~/.kube/config and no KUBECONFIG: only the cluster block can reach the cluster.
        let home = s.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        K8sCrash { server, s, kubeconfig, home: home.display().to_string() }
    }
    fn env(&self) -> Vec<(&str, &str)> {
        vec![("HOME", self.home.as_str()), ("KUBECONFIG", "")]
    }
    fn run(&self, args: &[&str]) -> Out {
        run_limited(self.s.path(), &self.env(), args, 120)
    }
    /// Starts an apply and kills it (SIGKILL) once `address` is being created.
    fn apply_killed_during(&self, address: &str) {
        let child = binary(self.s.path(), &self.env(), &["apply", "-auto-approve"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        wait_for(60, &format!("{address} to be pending"), || pending(self.s.path(), address));
        std::thread::sleep(Duration::from_millis(300));
        kill9(child);
    }
    fn deployments(&self, ns: &str) -> Vec<String> {
        let mut d: Vec<String> = self
            .server
            .objects("apps/v1", "Deployment")
            .iter()
            .filter(|o| o["metadata"]["namespace"] == ns)
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        d.sort();
        d
    }
}

#[test]
fn after_kill_9_on_kubernetes_recovery_reads_the_cluster_the_component_runs_on() {
    let c = K8sCrash::new();
    // A second cluster, so the recovery must pick the right one.
    let other = TestServer::start(Options::default());
    let other_kc = other.write_kubeconfig(&c.s.path().join("other"), "test").display().to_string();
    c.s.write("main.hcl", &k8s_stack(&c.kubeconfig, &["front"], Some(&other_kc), None));
    c.apply_killed_during("vault.main");
    assert!(c.server.object("apps/v1", "Deployment", Some("kerberos-vault"), "vault-main").is_some(), "the create reached the cluster before the kill");

    let r = c.run(&["plan"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(!r.stderr.contains("cannot read the kubeconfig"), "{}", r.text());
    assert!(r.stdout.contains("A previous run was interrupted while it was creating vault.main"), "{}", r.text());
    assert!(
        r.stdout.contains("# vault.main will be updated in place\n  # (because an interrupted run left this operation unfinished)"),
        "found live on its own cluster, not created again: {}",
        r.text()
    );
    let r = c.run(&["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(c.deployments("kerberos-vault"), ["vault-main"], "no duplicate");
    assert!(other.objects("apps/v1", "Deployment").is_empty(), "nothing on the other cluster");
    assert_eq!(c.run(&["plan", "-detailed-exitcode"]).code, 0);
}

#[test]
fn an_interrupted_create_is_deleted_when_its_camera_leaves_the_stack() {
    let c = K8sCrash::new();
    c.s.write("main.hcl", &k8s_stack(&c.kubeconfig, &["front"], None, None));
    assert_eq!(c.run(&["apply", "-auto-approve"]).code, 0);
    c.s.write("main.hcl", &k8s_stack(&c.kubeconfig, &["front", "yard"], None, None));
    c.apply_killed_during("agent.cam[\"yard\"]");
    assert_eq!(c.deployments("kerberos-agent"), ["agent-cam-front", "agent-cam-yard"]);
    // The camera leaves the stack before the next run.
    c.s.write("main.hcl", &k8s_stack(&c.kubeconfig, &["front"], None, None));
    let r = c.run(&["plan", "-detailed-exitcode"]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(
        r.stdout.contains("# agent.cam[\"yard\"] will be destroyed\n  # (because a run was interrupted while creating it, and it is no longer in the stack)"),
        "{}",
        r.text()
    );
    let r = c.run(&["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(c.deployments("kerberos-agent"), ["agent-cam-front"], "nothing orphaned: {}", r.text());
    let st = state_json(c.s.path());
    assert!(st["pending"].as_array().unwrap().is_empty(), "{st}");
    assert_eq!(c.run(&["plan", "-detailed-exitcode"]).code, 0);
    assert_eq!(c.run(&["destroy", "-auto-approve"]).code, 0, "destroy works");
    assert!(c.deployments("kerberos-agent").is_empty());
}

#[test]
fn an_interrupted_create_that_never_reached_the_cluster_is_forgotten_when_its_camera_leaves() {
    let c = K8sCrash::new();
    c.s.write("main.hcl", &k8s_stack(&c.kubeconfig, &["front"], None, None));
    assert_eq!(c.run(&["apply", "-auto-approve"]).code, 0);
    c.s.write("main.hcl", &k8s_stack(&c.kubeconfig, &["front", "yard"], None, None));
    c.apply_killed_during("agent.cam[\"yard\"]");
    // As if the kill came before the create request: nothing of the camera is on the cluster.
    for o in c.server.all_objects() {
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        if name.contains("cam-yard") {
            c.server.delete_object(o["apiVersion"].as_str().unwrap(), o["kind"].as_str().unwrap(), o["metadata"]["namespace"].as_str(), name);
        }
    }
    c.s.write("main.hcl", &k8s_stack(&c.kubeconfig, &["front"], None, None));
    let r = c.run(&["plan", "-detailed-exitcode"]);
    assert_eq!(r.code, 0, "nothing to change: {}", r.text());
    assert!(r.stdout.contains("A previous run was interrupted while it was creating agent.cam[\"yard\"]"), "{}", r.text());
    // An apply with nothing to change still records that the operation is settled.
    let r = c.run(&["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let st = state_json(c.s.path());
    assert!(st["pending"].as_array().unwrap().is_empty(), "{st}");
    let r = c.run(&["plan", "-detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(!r.stdout.contains("interrupted"), "not reported again: {}", r.text());
}

#[test]
fn an_interrupted_replacement_is_not_reported_as_a_change_outside_kdeploy() {
    let c = K8sCrash::new();
    c.s.write("main.hcl", &k8s_stack(&c.kubeconfig, &["front"], None, None));
    assert_eq!(c.run(&["apply", "-auto-approve"]).code, 0);
    // A new namespace replaces the agent: killed once the old one is deleted.
    c.s.write("main.hcl", &k8s_stack(&c.kubeconfig, &["front"], None, Some("cams")));
    let child = binary(c.s.path(), &c.env(), &["apply", "-auto-approve"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for(60, "the new agent", || c.deployments("cams").len() == 1);
    kill9(child);
    let r = c.run(&["plan"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(!r.stdout.contains("has been deleted") && !r.stdout.contains("changed outside of kdeploy"), "kdeploy's own replacement is not drift: {}", r.text());
    let r = c.run(&["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!((c.deployments("kerberos-agent"), c.deployments("cams")), (vec![], vec!["agent-cam-front".to_string()]));
}

#[test]
fn a_broken_lock_never_lets_the_old_holder_overwrite_newer_state() {
    let c = K8sCrash::new();
    c.server.set_ready_after(None);
    c.s.write("main.hcl", &k8s_stack(&c.kubeconfig, &["front"], None, None));
    let child = binary(c.s.path(), &c.env(), &["apply", "-auto-approve"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for(60, "the apply to wait on the vault", || pending(c.s.path(), "vault.main"));
    let lock: serde_json::Value = serde_json::from_slice(&std::fs::read(c.s.path().join(".kdeploy/state.json.lock")).unwrap()).unwrap();
    let id = lock["id"].as_str().unwrap().to_string();
    // The holder is alive: refused.
    let r = c.run(&["force-unlock", &id]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("still alive"), "{}", r.text());
    // Forced: then someone edits the state.
    assert_eq!(c.run(&["force-unlock", "--even-if-running", &id]).code, 0);
    let r = c.run(&["state", "rm", "object_storage.ceph"]);
    assert_eq!(r.code, 0, "{}", r.text());
    // The old run goes on, and must not undo that edit.
    c.server.set_ready_after(Some(Duration::ZERO));
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the file was changed by someone else while this run held the lock"), "{err}");
    assert!(c.s.path().join("errored.kdstate").exists() || c.s.path().join("home").exists(), "the run's state is kept");
    let st = state_json(c.s.path());
    assert!(!st["resources"].as_array().unwrap().iter().any(|r| r["address"] == "object_storage.ceph"), "the state rm stays: {st}");
}

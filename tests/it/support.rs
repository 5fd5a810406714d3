//! Shared test helpers: stacks in temporary directories, the CLI run in-process with the fake
//! provider, and output normalisation for snapshots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kdeploy::cli::{self, Env, Io};
use kdeploy::providers::Providers;
use kdeploy_provider::fake::FakeWorld;

/// A stack directory that is removed when dropped.
pub struct TestStack {
    /// Removed when dropped.
    _dir: tempfile::TempDir,
    /// The stack's directory: the temporary directory, or a directory inside it.
    root: PathBuf,
}

impl TestStack {
    pub fn new(files: &[(&str, &str)]) -> TestStack {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        let s = TestStack { _dir: dir, root };
        for (name, text) in files {
            s.write(name, text);
        }
        s
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn write(&self, name: &str, text: &str) {
        let p = self.root.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, text).expect("write stack file");
    }

    pub fn state_path(&self) -> PathBuf {
        self.root.join(".kdeploy/state.json")
    }

    pub fn state(&self) -> kdeploy_state::State {
        let bytes = std::fs::read(self.state_path()).expect("state file exists");
        kdeploy_state::decode(&bytes, "test").expect("valid state")
    }

    /// One recorded attribute of one resource (null when the attribute is absent).
    pub fn attr(&self, address: &str, attr: &str) -> serde_json::Value {
        let st = self.state();
        let r = st.resources.iter().find(|r| r.address.to_string() == address).unwrap_or_else(|| panic!("{address} in state"));
        r.attributes.get(attr).cloned().unwrap_or_default()
    }
}

/// Every platform provider replaced by the fake over `world`; `external` stays real.
pub fn fake_providers(world: &FakeWorld) -> Providers {
    let mut p = Providers::builtin();
    for name in ["aws", "azure", "docker", "gcp", "kubernetes"] {
        p.insert(name, world.provider(name));
    }
    p
}

/// The result of one CLI run.
#[derive(Debug, Clone)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Exit code, stdout and stderr in one text, normalised, for snapshots.
    pub fn snapshot(&self, dir: &Path) -> String {
        format!("exit code: {}\n----- stdout -----\n{}----- stderr -----\n{}", self.code, normalize(&self.stdout, dir), normalize(&self.stderr, dir))
    }
}

/// Replaces paths, durations and ids that change from run to run.
pub fn normalize(text: &str, dir: &Path) -> String {
    let mut t = text.replace(&dir.display().to_string(), "[DIR]");
    if let Ok(canon) = dir.canonicalize() {
        t = t.replace(&canon.display().to_string(), "[DIR]");
    }
    // Elapsed times: "after 3s", "[12s elapsed]".
    let mut out = String::with_capacity(t.len());
    let mut rest = t.as_str();
    while let Some(i) = rest.find("after ") {
        out.push_str(&rest[..i + 6]);
        rest = &rest[i + 6..];
        let digits = rest.chars().take_while(|c| c.is_ascii_digit() || *c == 'm' || *c == 's').count();
        if digits > 0 && rest[..digits].ends_with('s') {
            out.push_str("[T]");
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    uuid_scrub(&out)
}

fn uuid_scrub(s: &str) -> String {
    let bytes: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let is_uuid = |w: &[char]| w.len() == 36 && w.iter().enumerate().all(|(k, c)| if [8, 13, 18, 23].contains(&k) { *c == '-' } else { c.is_ascii_hexdigit() });
    while i < bytes.len() {
        if i + 36 <= bytes.len() && is_uuid(&bytes[i..i + 36]) {
            out.push_str("[UUID]");
            i += 36;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Runs `kdeploy ARGS` in-process in `dir` with the fake providers, stdin not a terminal.
pub fn run(dir: &Path, world: &FakeWorld, args: &[&str]) -> Run {
    run_with(dir, fake_providers(world), args, BTreeMap::new(), "")
}

pub fn run_with(dir: &Path, providers: Providers, args: &[&str], vars: BTreeMap<String, String>, stdin: &str) -> Run {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut input = std::io::Cursor::new(stdin.as_bytes().to_vec());
    let env = Env { providers, vars, cwd: dir.to_path_buf(), interrupt: Arc::new(tokio::sync::Notify::new()) };
    let mut argv = vec!["kdeploy".to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    let code = rt.block_on(async {
        let mut io = Io { out: &mut out, err: &mut err, input: &mut input, stdin_tty: !stdin.is_empty(), stdout_tty: false };
        cli::run(argv, &mut io, &env).await
    });
    Run { code, stdout: String::from_utf8_lossy(&out).into_owned(), stderr: String::from_utf8_lossy(&err).into_owned() }
}

/// A small stack used by many tests: a Docker cluster, MongoDB, MinIO, Vault and cameras.
pub fn basic_stack(cameras: &[(&str, &str)]) -> String {
    let cams: Vec<String> = cameras.iter().map(|(k, v)| format!("    {k} = \"{v}\"")).collect();
    format!(
        r#"stack "test" {{}}

variable "cameras" {{
  type = map(string)
  default = {{
{}
  }}
}}

cluster "edge" {{
  type = "docker"
}}

database "meta" {{
  type = "mongodb"
}}

object_storage "rec" {{
  type = "minio"
}}

vault "main" {{
  database = database.meta
  storage  = object_storage.rec
}}

agent "cam" {{
  for_each = var.cameras
  vault    = vault.main
  rtsp_url = each.value
}}

output "vault_url" {{
  value = vault.main.url
}}

output "vault_secret" {{
  value     = vault.main.secret_key
  sensitive = true
}}
"#,
        cams.join("\n")
    )
}

/// What a run of the real binary printed.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn text(&self) -> String {
        format!("exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs the real `kdeploy` binary as a child process in `dir`, with the cloud credentials and
/// endpoint variables of this process (AWS_*, AZURE_*, GOOGLE_*, ...) removed (nothing reaches a real cloud by accident) and
/// `env` set instead; an empty value removes the variable.
pub fn run_binary(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Out {
    let out = binary(dir, env, args).output().expect("run kdeploy");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The command [`run_binary`] runs, to spawn it (and kill it) instead.
pub fn binary(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_kdeploy"));
    // Run from the stack directory too: files kdeploy writes next to where it runs (an
    // errored.kdstate) stay in the test's directory.
    c.arg("-C").arg(dir).args(args).env("NO_COLOR", "1").current_dir(dir);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if ["AWS_", "AZURE_", "GOOGLE_", "CLOUDSDK_", "KDEPLOY_"].iter().any(|p| k.starts_with(p)) {
            c.env_remove(k.as_ref());
        }
    }
    // No gcloud ADC file or az CLI login of the person running the tests.
    c.env("CLOUDSDK_CONFIG", dir.join("no-gcloud-config")).env("AZURE_CONFIG_DIR", dir.join("no-azure-config"));
    for (k, v) in env {
        if v.is_empty() {
            c.env_remove(k);
        } else {
            c.env(k, v);
        }
    }
    c
}

/// A whole stack on a managed cluster: `cloud` declares `cluster "cloud"` and
/// `object_storage "recordings"` (which may use `var.retention_days`); then an external database
/// at `database_uri`, Vault and one agent run inside the cluster.
pub fn stack_on_cloud(cloud: &str, database_uri: &str) -> String {
    format!(
        r#"variable "retention_days" {{
  default = 30
}}

{cloud}
database "meta" {{
  type = "external"
  uri  = "{database_uri}"
}}

vault "main" {{
  database          = database.meta
  storage           = object_storage.recordings
  retention_days    = var.retention_days
  readiness_timeout = "20s"
}}

agent "cam" {{
  vault             = vault.main
  rtsp_url          = "rtsp://10.0.0.1/stream1"
  readiness_timeout = "20s"
}}
"#
    )
}

/// Checks that Vault and the agent of [`stack_on_cloud`] were written to the test API server by
/// kdeploy; returns Vault's Secret.
pub fn assert_stack_in_cluster(server: &kdeploy_kube_testserver::TestServer) -> serde_json::Value {
    let vault = server.object("apps/v1", "Deployment", Some("kerberos-vault"), "vault-main").expect("vault deployment on the new cluster");
    assert_eq!(vault["metadata"]["labels"]["app.kubernetes.io/managed-by"], "kdeploy");
    assert!(server.object("apps/v1", "Deployment", Some("kerberos-agent"), "agent-cam").is_some(), "agent deployment");
    server.object("v1", "Secret", Some("kerberos-vault"), "vault-main").expect("vault secret")
}

/// A Kerberos Vault stand-in behind the test API server's service proxy for the Service `name`
/// in `namespace` (port 80), as strict as Vault: it answers with the environment kdeploy gave
/// the Deployment `name` (its `VAULT_*` definitions), read again for every request as if Vault
/// restarted; pods of vault Deployments whose definitions Vault would refuse crash loop with
/// Vault's message. With `ignore_variables` it is an image that predates the variables.
/// The address the load balancer of [`managed_cluster`] gives the first LoadBalancer Service.
pub const CLOUD_LB_IP: &str = "203.0.113.10";

/// A test API server standing in for a managed cluster (EKS, AKS, GKE), whose cloud controller
/// gives LoadBalancer Services an address.
pub fn managed_cluster() -> kdeploy_kube_testserver::TestServer {
    let opts = kdeploy_kube_testserver::Options {
        load_balancer_ips: vec![CLOUD_LB_IP.into()],
        node_provider_id: Some("aws:///eu-west-1a/i-0123456789abcdef0".into()),
        ..Default::default()
    };
    kdeploy_kube_testserver::TestServer::start(opts)
}

/// A central Kubernetes cluster `cluster.central` (kubeconfig given as an HCL expression,
/// context `test`) with MongoDB `database.meta` and MinIO `object_storage.recordings` on it:
/// what the fleet tests declare before their central Vault.
pub fn central_services(kubeconfig: &str) -> String {
    format!(
        r#"cluster "central" {{
  type       = "kubernetes"
  kubeconfig = {kubeconfig}
  context    = "test"
}}

database "meta" {{
  cluster = cluster.central
  type    = "mongodb"
}}

object_storage "recordings" {{
  cluster = cluster.central
  type    = "minio"
}}
"#
    )
}

pub fn vault_standin(server: &kdeploy_kube_testserver::TestServer, namespace: &str, name: &str, release: kdeploy_standins::vault::Release) {
    let handle = server.handle();
    let (ns, n) = (namespace.to_string(), name.to_string());
    let env = Arc::new(move || handle.workload_env("apps/v1", "Deployment", &ns, &n).ok_or_else(|| format!("no Deployment {ns}/{n}")));
    let addr = kdeploy_standins::spawn_vault("127.0.0.1:0", env, release.clone()).expect("start the Vault stand-in");
    server.register_proxy(namespace, name, 80, &format!("http://{addr}"));
    server.set_pod_check(Arc::new(move |w, env| {
        if w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] != "vault" {
            return Ok(());
        }
        kdeploy_standins::vault::load_for(env, &release).map(|_| ()).map_err(|e| format!("level=fatal msg=\"invalid declarative configuration: {e}\""))
    }));
}

/// A copy of `examples/NAME` in a temporary directory, laid out as in the repository (the
/// examples call `../../modules/...`): the stack is `<tmp>/examples/NAME`.
pub fn example(name: &str) -> TestStack {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    copy_hcl(&repo.join("examples").join(name), &dir.path().join("examples").join(name));
    copy_hcl(&repo.join("modules"), &dir.path().join("modules"));
    let root = dir.path().join("examples").join(name);
    TestStack { _dir: dir, root }
}

/// Copies the .hcl files of a directory tree.
fn copy_hcl(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("directory") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("file name"));
        if path.is_dir() {
            copy_hcl(&path, &target);
        } else if path.extension().is_some_and(|e| e == "hcl") {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

/// Waits for `f` (at most `secs`), polling.
pub fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn kill9(mut child: Child) {
    child.kill().expect("SIGKILL");
    let _ = child.wait();
}

/// Runs a command with a hard time limit: a hang is a test failure, not a stuck CI job. Output
/// is read while it runs, so a chatty run never blocks on a full pipe.
pub fn run_limited(dir: &Path, env: &[(&str, &str)], args: &[&str], secs: u64) -> Out {
    let child = binary(dir, env, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn kdeploy");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => {
            let out = out.expect("output");
            Out {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
        Err(_) => {
            let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("kdeploy {args:?} did not finish within {secs}s");
        }
    }
}

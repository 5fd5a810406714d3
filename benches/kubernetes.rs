//! Kubernetes end to end, against kubectl in the same run. The test API server
//! (tests/kube-apiserver, event-driven, in this process) stands in for a cluster; the real
//! `kdeploy` binary plans from an empty state, applies, plans again with no changes and plans
//! after one camera changed, for N cameras (three objects each, plus Vault, MinIO, MongoDB,
//! RabbitMQ and Factory). Then kubectl, against the same server, runs `diff --server-side` of the
//! objects kdeploy wrote (what kdeploy owns of them, as a manifest) and, once they are deleted,
//! `apply --server-side` of them.
//!
//! Each kdeploy and kubectl run is measured from outside: wall time, user+sys CPU and peak RSS
//! of the child (rusage, through `/usr/bin/time`), bytes it wrote to disk (rusage blocks), and
//! the API requests the server received. The growth exponent between two sizes is
//! log(cost₂/cost₁) / log(N₂/N₁): 1 is linear.
//!
//! Run: `cargo bench --bench kubernetes`
//! Env:  KDEPLOY_BENCH_CAMERAS  sizes, comma-separated (default "300,1000")
//!       KDEPLOY_BENCH_BIN      the kdeploy binary to measure (default: the one built with this
//!                              bench, in the bench profile)
//!       KUBECTL                the kubectl to compare with (default: `kubectl` on PATH)

// Bench code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Cost, exponent, measure, row, tail, timed, vault_standin};
use kdeploy_kube_testserver::{Options, TestServer};
use kdeploy_provider_kubernetes::fields;
use serde_json::{Value, json};

fn stack(kubeconfig: &Path, cameras: usize, changed: Option<usize>) -> String {
    let mut cams = String::new();
    for i in 0..cameras {
        let url = if changed == Some(i) { format!("rtsp://10.1.{}.{}/moved", i / 250, i % 250) } else { format!("rtsp://10.0.{}.{}/stream", i / 250, i % 250) };
        let _ = writeln!(cams, "    cam{i:04} = \"{url}\"");
    }
    format!(
        r#"variable "cameras" {{
  type    = map(string)
  default = {{
{cams}  }}
}}

cluster "k8s" {{
  type       = "kubernetes"
  kubeconfig = "{kubeconfig}"
  context    = "bench"
}}

object_storage "recordings" {{
  type = "minio"
}}

database "meta" {{
  type     = "mongodb"
  password = "bench-password"
}}

broker "events" {{
  type = "rabbitmq"
}}

vault "main" {{
  database = database.meta
  storage  = object_storage.recordings
  broker   = broker.events
}}

agent "cam" {{
  for_each = var.cameras
  vault    = vault.main
  rtsp_url = each.value
}}

factory "ui" {{}}
"#,
        kubeconfig = kubeconfig.display()
    )
}

/// The objects kdeploy wrote, as a manifest of what kdeploy owns of each (from its
/// managedFields), namespaces first: what `kubectl apply --server-side` would send to get them.
fn manifest(server: &TestServer) -> (Value, Vec<String>) {
    let mut namespaces = Vec::new();
    let mut others = Vec::new();
    let mut names = Vec::new();
    for obj in server.all_objects() {
        if obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] != "kdeploy" || obj["kind"] == "Pod" {
            continue;
        }
        let meta = &obj["metadata"];
        if obj["kind"] == "Namespace" {
            names.push(meta["name"].as_str().unwrap().to_string());
            namespaces.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": meta["name"], "labels": meta["labels"], "annotations": meta["annotations"]}}));
            continue;
        }
        let Some(set) = fields::owned_fields(&obj, "kdeploy") else { continue };
        let mut owned = fields::project(&obj, &set);
        owned["apiVersion"] = obj["apiVersion"].clone();
        owned["kind"] = obj["kind"].clone();
        owned["metadata"]["name"] = meta["name"].clone();
        if meta["namespace"].is_string() {
            owned["metadata"]["namespace"] = meta["namespace"].clone();
        }
        others.push(owned);
    }
    namespaces.extend(others);
    (json!({"apiVersion": "v1", "kind": "List", "items": namespaces}), names)
}

struct Size {
    cameras: usize,
    objects: usize,
    phases: Vec<(&'static str, Cost)>,
    state_bytes: u64,
}

fn run_size(kdeploy: &Path, kubectl: Option<&Path>, cameras: usize) -> Size {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(Options::default());
    vault_standin(&server, "kerberos-vault", "vault-main");
    let kubeconfig = server.write_kubeconfig(dir.path(), "bench");
    let stack_dir = dir.path().join("stack");
    std::fs::create_dir_all(&stack_dir).unwrap();
    let write = |changed| std::fs::write(stack_dir.join("main.hcl"), stack(&kubeconfig, cameras, changed)).unwrap();
    write(None);
    let mut phases = Vec::new();
    let kd = |args: &[&str], expect| measure(&[&server], &stack_dir, kdeploy, args, &[], &[expect]).0;
    eprintln!("{cameras} cameras: kdeploy plan from an empty state");
    phases.push(("kdeploy plan (empty state)", kd(&["plan"], 0)));
    eprintln!("{cameras} cameras: kdeploy apply");
    phases.push(("kdeploy apply", kd(&["apply", "--auto-approve"], 0)));
    let state_bytes = std::fs::metadata(stack_dir.join(".kdeploy/state.json")).map(|m| m.len()).unwrap_or(0);
    eprintln!("{cameras} cameras: kdeploy plan, no changes");
    phases.push(("kdeploy plan (no changes)", kd(&["plan", "--detailed-exitcode"], 0)));
    write(Some(cameras / 2));
    eprintln!("{cameras} cameras: kdeploy plan, one camera changed");
    phases.push(("kdeploy plan (one camera changed)", kd(&["plan", "--detailed-exitcode"], 2)));
    write(None);

    let (list, namespaces) = manifest(&server);
    let objects = list["items"].as_array().map_or(0, Vec::len);
    if let Some(kubectl) = kubectl {
        let file = dir.path().join("objects.json");
        std::fs::write(&file, serde_json::to_vec_pretty(&list).unwrap()).unwrap();
        let file = file.display().to_string();
        let kubeconfig = kubeconfig.display().to_string();
        let cache = dir.path().join("kube-cache").display().to_string();
        let home = dir.path().display().to_string();
        let env = [("KUBECONFIG", kubeconfig.as_str()), ("HOME", home.as_str())];
        let kc = |args: &[&str], expect: &[i32]| {
            let mut all = vec!["--cache-dir", cache.as_str()];
            all.extend_from_slice(args);
            measure(&[&server], dir.path(), kubectl, &all, &env, expect)
        };
        // Discovery once, as any kubectl user has it cached.
        kc(&["api-resources"], &[0]);
        eprintln!("{cameras} cameras: kubectl diff --server-side");
        // 0: no differences, 1: some.
        let (diff, text) = kc(&["diff", "--server-side", "-f", &file], &[0, 1]);
        if !text.trim().is_empty() {
            eprintln!("kubectl diff found differences (its cost still counts):\n{}", tail(&text));
        }
        phases.push(("kubectl diff --server-side", diff));
        // Back to an empty cluster: kubectl creates what kdeploy created.
        for ns in &namespaces {
            server.delete_object("v1", "Namespace", None, ns);
        }
        for (api_version, kind) in [("rbac.authorization.k8s.io/v1", "ClusterRole"), ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding")] {
            for o in server.objects(api_version, kind) {
                if o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kdeploy" {
                    server.delete_object(api_version, kind, None, o["metadata"]["name"].as_str().unwrap());
                }
            }
        }
        eprintln!("{cameras} cameras: kubectl apply --server-side");
        phases.push(("kubectl apply --server-side", kc(&["apply", "--server-side", "-f", &file], &[0]).0));
    }
    Size { cameras, objects, phases, state_bytes }
}

fn main() {
    // `cargo bench` passes --bench; a filter argument is ignored.
    let sizes: Vec<usize> = std::env::var("KDEPLOY_BENCH_CAMERAS")
        .unwrap_or_else(|_| "300,1000".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap_or_else(|_| panic!("KDEPLOY_BENCH_CAMERAS must be numbers, got {s:?}")))
        .collect();
    let kdeploy = PathBuf::from(std::env::var("KDEPLOY_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_kdeploy").to_string()));
    let kubectl = std::env::var("KUBECTL").map(PathBuf::from).ok().or_else(|| {
        let found = Command::new("sh").args(["-c", "command -v kubectl"]).output().ok()?;
        let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
        (!path.is_empty()).then(|| PathBuf::from(path))
    });
    if kubectl.is_none() {
        eprintln!("no kubectl found (set KUBECTL): the comparison is left out");
    }
    if !timed() {
        eprintln!("no /usr/bin/time: CPU, peak RSS and disk writes are left out");
    }
    let version = Command::new(&kdeploy).arg("version").output().map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().to_string());
    println!("kdeploy: {} ({})", kdeploy.display(), version.unwrap_or_default());
    if let Some(k) = &kubectl {
        let v =
            Command::new(k).args(["version", "--client"]).output().map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().to_string());
        println!("kubectl: {} ({})", k.display(), v.unwrap_or_default());
    }
    let results: Vec<Size> = sizes.iter().map(|&n| run_size(&kdeploy, kubectl.as_deref(), n)).collect();

    println!();
    println!("| cameras (objects) | run | wall | CPU (user+sys) | peak RSS | API requests | disk writes |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for s in &results {
        for (name, c) in &s.phases {
            println!("{}", row(&format!("{} ({})", s.cameras, s.objects), name, c));
        }
    }
    for s in &results {
        let get = |n: &str| s.phases.iter().find(|(p, _)| *p == n).map(|(_, c)| c);
        println!();
        println!("{} cameras: state file {:.1} MiB", s.cameras, s.state_bytes as f64 / 1048576.0);
        if let (Some(k), Some(d)) = (get("kdeploy plan (no changes)"), get("kubectl diff --server-side")) {
            println!("  kubectl diff --server-side / kdeploy plan (no changes): wall {:.1}x", d.wall.as_secs_f64() / k.wall.as_secs_f64());
        }
        if let (Some(k), Some(a)) = (get("kdeploy apply"), get("kubectl apply --server-side")) {
            println!(
                "  kubectl apply --server-side / kdeploy apply (waits included): wall {:.2}x, requests {} vs {}",
                a.wall.as_secs_f64() / k.wall.as_secs_f64(),
                a.requests,
                k.requests
            );
        }
    }
    for pair in results.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        println!();
        println!("growth exponent {} -> {} cameras (1.00 = linear):", a.cameras, b.cameras);
        let phases: BTreeMap<&str, (&Cost, &Cost)> =
            a.phases.iter().filter_map(|(n, ca)| b.phases.iter().find(|(m, _)| m == n).map(|(_, cb)| (*n, (ca, cb)))).collect();
        for (name, (ca, cb)) in phases {
            println!(
                "  {name}: wall {}, CPU {}, peak RSS {}, requests {}",
                exponent(ca.wall.as_secs_f64(), cb.wall.as_secs_f64(), a.cameras, b.cameras),
                match (ca.cpu, cb.cpu) {
                    (Some(x), Some(y)) => exponent(x.as_secs_f64(), y.as_secs_f64(), a.cameras, b.cameras),
                    _ => "n/a".into(),
                },
                match (ca.peak_rss_kib, cb.peak_rss_kib) {
                    (Some(x), Some(y)) => exponent(x as f64, y as f64, a.cameras, b.cameras),
                    _ => "n/a".into(),
                },
                exponent(ca.requests as f64, cb.requests as f64, a.cameras, b.cameras),
            );
        }
    }
}

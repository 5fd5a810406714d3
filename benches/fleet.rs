//! A fleet: a central cluster (Vault, MinIO, MongoDB) and S sites of C cameras each, every site
//! its own Kubernetes cluster (a test API server each, in this process), its agents uploading
//! to the central Vault's external URL with the site's own account. The real `kdeploy` binary
//! plans from an empty state, applies, and plans again with no changes; each run is measured
//! from outside (wall, CPU, peak RSS) with the API requests all servers received.
//!
//! What it shows: a plan's requests grow with the sites (one LIST per kind and namespace on
//! each cluster), never with the cameras.
//!
//! Run: `cargo bench --bench fleet`
//! Env:  KDEPLOY_BENCH_FLEET     shapes SITESxCAMERAS, comma-separated (default "50x10,100x10,100x5")
//!       KDEPLOY_BENCH_BIN       the kdeploy binary to measure (default: the one built with this bench)

// Bench code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used)]

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use common::{Cost, exponent, measure, row, vault_standin};
use kdeploy_kube_testserver::{Options, TestServer};

/// The stack: sites by name => kubeconfig, cameras by "site/camera" => site and RTSP URL.
fn stack(central: &Path, sites: &[(String, PathBuf)], cameras: usize) -> String {
    let mut site_map = String::new();
    let mut cams = String::new();
    for (i, (name, kubeconfig)) in sites.iter().enumerate() {
        let _ = writeln!(site_map, "    {name} = \"{}\"", kubeconfig.display());
        for c in 0..cameras {
            let _ = writeln!(cams, "    \"{name}-cam{c:02}\" = {{ site = \"{name}\", rtsp = \"rtsp://10.{}.{}.{c}/stream\" }}", i / 250, i % 250);
        }
    }
    format!(
        r#"stack "fleet" {{}}

variable "sites" {{
  type = map(string)
  default = {{
{site_map}  }}
}}

variable "cameras" {{
  type = map(object({{ site = string, rtsp = string }}))
  default = {{
{cams}  }}
}}

cluster "central" {{
  type       = "kubernetes"
  kubeconfig = "{central}"
  context    = "bench"
}}

database "meta" {{
  cluster  = cluster.central
  type     = "mongodb"
  password = "bench-password"
}}

object_storage "recordings" {{
  cluster = cluster.central
  type    = "minio"
}}

vault "central" {{
  cluster   = cluster.central
  database  = database.meta
  storage   = object_storage.recordings
  node_port = 30080
  accounts  = {{ for name, kubeconfig in var.sites : name => {{ directory = name }} }}
}}

cluster "site" {{
  for_each   = var.sites
  type       = "kubernetes"
  kubeconfig = each.value
  context    = "bench"
}}

agent "cam" {{
  for_each = var.cameras
  cluster  = cluster.site[each.value.site]
  vault    = vault.central
  account  = each.value.site
  rtsp_url = each.value.rtsp
}}
"#,
        central = central.display()
    )
}

struct Shape {
    sites: usize,
    cameras: usize,
    phases: Vec<(&'static str, Cost)>,
}

fn run(kdeploy: &Path, sites: usize, cameras: usize) -> Shape {
    let dir = tempfile::tempdir().unwrap();
    let central = TestServer::start(Options::default());
    vault_standin(&central, "kerberos-vault", "vault-central");
    let edges: Vec<TestServer> = (0..sites).map(|_| TestServer::start(Options::default())).collect();
    let central_kc = central.write_kubeconfig(&dir.path().join("central"), "bench");
    let site_kcs: Vec<(String, PathBuf)> =
        edges.iter().enumerate().map(|(i, e)| (format!("s{i:03}"), e.write_kubeconfig(&dir.path().join(format!("s{i:03}")), "bench"))).collect();
    let stack_dir = dir.path().join("stack");
    std::fs::create_dir_all(&stack_dir).unwrap();
    std::fs::write(stack_dir.join("main.hcl"), stack(&central_kc, &site_kcs, cameras)).unwrap();
    let mut servers: Vec<&TestServer> = edges.iter().collect();
    servers.push(&central);
    let kd = |args: &[&str], expect| measure(&servers, &stack_dir, kdeploy, args, &[], &[expect]).0;
    let mut phases = Vec::new();
    eprintln!("{sites} sites x {cameras} cameras: plan from an empty state");
    phases.push(("kdeploy plan (empty state)", kd(&["plan"], 0)));
    eprintln!("{sites} sites x {cameras} cameras: apply");
    phases.push(("kdeploy apply", kd(&["apply", "--auto-approve", "--parallelism", "20"], 0)));
    eprintln!("{sites} sites x {cameras} cameras: plan, no changes");
    phases.push(("kdeploy plan (no changes)", kd(&["plan", "--detailed-exitcode"], 0)));
    Shape { sites, cameras, phases }
}

fn main() {
    let shapes: Vec<(usize, usize)> = std::env::var("KDEPLOY_BENCH_FLEET")
        .unwrap_or_else(|_| "50x10,100x10,100x5".into())
        .split(',')
        .map(|s| {
            let (a, b) = s.trim().split_once('x').unwrap_or_else(|| panic!("KDEPLOY_BENCH_FLEET must be SITESxCAMERAS, got {s:?}"));
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    let kdeploy = PathBuf::from(std::env::var("KDEPLOY_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_kdeploy").to_string()));
    let results: Vec<Shape> = shapes.iter().map(|&(s, c)| run(&kdeploy, s, c)).collect();
    println!();
    println!("| sites x cameras | run | wall | CPU (user+sys) | peak RSS | API requests | disk writes |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for r in &results {
        for (name, c) in &r.phases {
            println!("{}", row(&format!("{} x {}", r.sites, r.cameras), name, c));
        }
    }
    let get = |r: &Shape, n: &str| r.phases.iter().find(|(p, _)| *p == n).map(|(_, c)| c.requests as f64).unwrap_or(0.0);
    for pair in results.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let (what, na, nb) = if a.cameras == b.cameras { ("sites", a.sites, b.sites) } else { ("cameras per site", a.cameras, b.cameras) };
        if (a.cameras == b.cameras) == (a.sites == b.sites) {
            continue;
        }
        println!();
        println!("growth exponent of requests, {} x {} -> {} x {} ({what}; 1.00 = linear, 0 = constant):", a.sites, a.cameras, b.sites, b.cameras);
        for n in ["kdeploy plan (no changes)", "kdeploy apply"] {
            println!("  {n}: {}", exponent(get(a, n), get(b, n), na, nb));
        }
    }
}

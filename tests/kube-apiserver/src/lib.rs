//! An in-process Kubernetes API server for kdeploy's tests.
//!
//! See `README.md` in this crate for what is implemented and what is not.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]
#![allow(clippy::too_many_arguments, clippy::type_complexity)]

mod api;
mod controller;
mod fields;
mod proto;
mod resources;

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use resources::{RESOURCES, Res};

/// Server behaviour knobs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Delay after which workloads become ready; `None` = never ready.
    pub ready_after: Option<Duration>,
    /// (verb, resource plural, namespace) rules answered with 403; `"*"` matches any verb/resource,
    /// a `None` namespace matches every namespace (and cluster-scoped requests).
    pub forbidden: Vec<(String, String, Option<String>)>,
    /// StorageClasses to seed: (name, is default).
    pub storage_classes: Vec<(String, bool)>,
    /// Waiting reason of containers of workloads that never become ready.
    pub waiting_reason: String,
    /// Addresses a load-balancer implementation (a cloud controller, MetalLB) gives Services of
    /// type LoadBalancer, in order, in `status.loadBalancer.ingress[0].ip`. Empty (the
    /// default, as on a bare cluster): such Services stay pending.
    pub load_balancer_ips: Vec<String>,
    /// The `spec.providerID` of the cluster's node: set by a cloud controller
    /// (`aws:///eu-west-1a/i-...` on EKS), absent on a bare cluster (the default).
    pub node_provider_id: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ready_after: Some(Duration::from_millis(0)),
            forbidden: vec![],
            storage_classes: vec![("standard".into(), true)],
            waiting_reason: "ImagePullBackOff".into(),
            load_balancer_ips: vec![],
            node_provider_id: None,
        }
    }
}

#[derive(Clone)]
pub(crate) struct WatchEvent {
    pub rv: u64,
    pub res: usize,
    pub ns: String,
    pub typ: &'static str,
    pub obj: Value,
}

/// Decides whether a workload's pods start: given the workload and the environment its first
/// container would get (env, envFrom and secret/configmap references resolved), `Err` holds what
/// the container logs before exiting (its pods then crash loop and never become ready).
pub type PodCheck = Arc<dyn Fn(&Value, &BTreeMap<String, String>) -> Result<(), String> + Send + Sync>;

pub(crate) struct State {
    pub opts: Options,
    /// Targets of the service proxy: (namespace, service, port) → base URL.
    pub proxies: BTreeMap<(String, String, String), String>,
    pub pod_check: Option<PodCheck>,
    /// What each crash-looping pod logged: (namespace, pod) → text.
    pub pod_logs: BTreeMap<(String, String), String>,
    pub rv: u64,
    /// (resource index, namespace ("" for cluster-scoped), name) -> object
    pub objects: BTreeMap<(usize, String, String), Value>,
    pub requests: Vec<(String, String)>,
    pub history: VecDeque<WatchEvent>,
    pub tx: tokio::sync::broadcast::Sender<WatchEvent>,
    pub next_ip: u32,
    pub next_node_port: u32,
    pub port: u16,
    pub ctrl: controller::CtrlState,
    /// The resources this server's CustomResourceDefinitions define (indices after the
    /// built-in ones, see `resources::define`).
    pub crds: std::collections::BTreeSet<usize>,
}

pub(crate) fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // civil from days (Howard Hinnant)
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

pub(crate) fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl State {
    fn new(opts: Options) -> State {
        let (tx, _) = tokio::sync::broadcast::channel(4096);
        let mut s = State {
            opts,
            rv: 100,
            objects: BTreeMap::new(),
            requests: vec![],
            history: VecDeque::new(),
            tx,
            next_ip: 2,
            next_node_port: 30000,
            port: 0,
            ctrl: Default::default(),
            proxies: BTreeMap::new(),
            pod_check: None,
            pod_logs: BTreeMap::new(),
            crds: Default::default(),
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let mut o = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            s.init_meta(resources::NS, &mut o);
            resources::apply_defaults(resources::NS, &mut o);
            s.store(resources::NS, o);
        }
        let default_sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "default"}});
        let mut sa = default_sa;
        s.init_meta(5, &mut sa);
        s.store(5, sa);
        let mut kube_svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": "10.152.183.1", "clusterIPs": ["10.152.183.1"], "ports": [{"name": "https", "port": 443, "targetPort": 16443}]}});
        s.init_meta(resources::SVC, &mut kube_svc);
        resources::apply_defaults(resources::SVC, &mut kube_svc);
        s.store(resources::SVC, kube_svc);
        // One node; its providerID says whether a cloud controller runs it.
        let mut node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}},
            "spec": {}, "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}], "allocatable": {"cpu": "2", "memory": "24Gi", "pods": "110"}}});
        if let Some(id) = &s.opts.node_provider_id {
            node["spec"]["providerID"] = json!(id);
        }
        s.init_meta(resources::NODE, &mut node);
        s.store(resources::NODE, node);
        let classes = s.opts.storage_classes.clone();
        for (name, default) in classes {
            let mut o = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name}, "provisioner": "kdeploy.test/hostpath"});
            if default {
                o["metadata"]["annotations"] = json!({"storageclass.kubernetes.io/is-default-class": "true"});
            }
            s.init_meta(resources::SC, &mut o);
            resources::apply_defaults(resources::SC, &mut o);
            s.store(resources::SC, o);
        }
        s
    }

    /// uid, creationTimestamp, generation for a new object.
    pub(crate) fn init_meta(&mut self, res: usize, o: &mut Value) {
        let md = &mut o["metadata"];
        if md.get("uid").is_none() {
            md["uid"] = json!(new_uid());
        }
        md["creationTimestamp"] = json!(now_rfc3339());
        if resources::res(res).generation {
            md["generation"] = json!(1);
        } else if let Some(m) = md.as_object_mut() {
            m.remove("generation");
        }
    }

    pub(crate) fn key_of(res: usize, o: &Value) -> (usize, String, String) {
        let ns =
            if resources::res(res).namespaced { o.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_string() } else { String::new() };
        let name = o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
        (res, ns, name)
    }

    fn emit(&mut self, res: usize, ns: String, typ: &'static str, obj: Value) {
        self.ctrl.note(res, &ns, &obj, self.pod_check.is_some());
        let ev = WatchEvent { rv: self.rv, res, ns, typ, obj };
        self.history.push_back(ev.clone());
        if self.history.len() > 20000 {
            self.history.pop_front();
        }
        let _ = self.tx.send(ev);
    }

    /// Persist (create or replace), bumping the resourceVersion. Returns the stored object.
    pub(crate) fn store(&mut self, res: usize, mut o: Value) -> Value {
        if res == resources::CRD {
            self.define(&mut o);
        }
        self.rv += 1;
        o["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let key = Self::key_of(res, &o);
        let typ = if self.objects.contains_key(&key) { "MODIFIED" } else { "ADDED" };
        self.objects.insert(key.clone(), o.clone());
        self.emit(res, key.1, typ, o.clone());
        o
    }

    /// A stored CRD serves its kinds at once, as the real server does once the CRD is
    /// Established (its status says so, with the names it accepted).
    fn define(&mut self, crd: &mut Value) {
        let defined = resources::crd_versions(crd);
        self.crds.extend(defined.iter().copied());
        let accepted = crd["spec"]["names"].clone();
        let now = now_rfc3339();
        let condition =
            |t: &str, reason: &str, message: &str| json!({"type": t, "status": "True", "lastTransitionTime": now, "reason": reason, "message": message});
        crd["status"] = json!({
            "acceptedNames": accepted,
            "conditions": [condition("NamesAccepted", "NoConflicts", "no conflicts found"), condition("Established", "InitialNamesAccepted", "the initial names have been accepted")],
            "storedVersions": crd["spec"]["versions"].as_array().into_iter().flatten().filter(|v| v["storage"] == true).map(|v| v["name"].clone()).collect::<Vec<_>>(),
        });
    }

    pub(crate) fn remove(&mut self, res: usize, ns: &str, name: &str) -> Option<Value> {
        let mut o = self.objects.remove(&(res, ns.to_string(), name.to_string()))?;
        if res == resources::CRD {
            // Deleting a CRD deletes its custom resources and stops serving its kinds.
            for r in resources::crd_versions(&o) {
                self.crds.remove(&r);
                let keys: Vec<_> = self.objects.keys().filter(|k| k.0 == r).cloned().collect();
                for k in keys {
                    self.remove(k.0, &k.1, &k.2);
                }
            }
        }
        self.rv += 1;
        o["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.emit(res, ns.to_string(), "DELETED", o.clone());
        Some(o)
    }

    /// Remove an object and (unless `orphan`) everything it owns, recursively;
    /// removing a namespace removes every object in it.
    pub(crate) fn remove_cascade(&mut self, res: usize, ns: &str, name: &str, orphan: bool) -> Option<Value> {
        let o = self.remove(res, ns, name)?;
        if res == resources::NS {
            let keys: Vec<_> = self.objects.keys().filter(|k| resources::res(k.0).namespaced && k.1 == name).cloned().collect();
            for k in keys {
                self.remove(k.0, &k.1, &k.2);
            }
        } else if !orphan {
            let uid = o.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
            let owned: Vec<_> = self
                .objects
                .iter()
                .filter(|(_, v)| {
                    v.pointer("/metadata/ownerReferences").and_then(Value::as_array).is_some_and(|refs| refs.iter().any(|r| r.get("uid") == Some(&uid)))
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in owned {
                self.remove_cascade(k.0, &k.1, &k.2, false);
            }
        }
        Some(o)
    }
}

pub(crate) type Shared = Arc<Mutex<State>>;

/// An in-process Kubernetes API server (plain HTTP on 127.0.0.1). Stops on drop.
pub struct TestServer {
    state: Shared,
    port: u16,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start(opts: Options) -> TestServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().unwrap().port();
        let mut st = State::new(opts);
        st.port = port;
        let state: Shared = Arc::new(Mutex::new(st));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let st2 = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("kube-testserver-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
                rt.block_on(api::serve(listener, st2, rx));
                rt.shutdown_timeout(Duration::from_millis(100));
            })
            .expect("spawn server thread");
        TestServer { state, port, shutdown: Some(tx), thread: Some(thread) }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn kubeconfig_yaml(&self, context: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {c}\n  cluster:\n    server: {url}\ncontexts:\n- name: {c}\n  context:\n    cluster: {c}\n    user: {c}\n    namespace: default\ncurrent-context: {c}\npreferences: {{}}\nusers:\n- name: {c}\n  user:\n    token: kdeploy-test-token\n",
            c = context,
            url = self.url()
        )
    }

    pub fn write_kubeconfig(&self, dir: &std::path::Path, context: &str) -> std::path::PathBuf {
        std::fs::create_dir_all(dir).expect("create kubeconfig dir");
        let p = dir.join("kubeconfig");
        std::fs::write(&p, self.kubeconfig_yaml(context)).expect("write kubeconfig");
        p
    }

    pub fn requests(&self) -> Vec<(String, String)> {
        self.st().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.st().requests.clear();
    }

    pub fn object(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let res = resources::find_res(api_version, kind)?;
        let ns = if resources::res(res).namespaced { namespace.unwrap_or("default") } else { "" };
        self.st().objects.get(&(res, ns.to_string(), name.to_string())).cloned()
    }

    pub fn objects(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let Some(res) = resources::find_res(api_version, kind) else { return vec![] };
        self.st().objects.iter().filter(|(k, _)| k.0 == res).map(|(_, v)| v.clone()).collect()
    }

    /// Every stored object, of every kind (including what controllers created: pods, replica sets).
    pub fn all_objects(&self) -> Vec<Value> {
        self.st().objects.values().cloned().collect()
    }

    /// Out-of-band create/replace. Missing uid/creationTimestamp are kept from the
    /// existing object (or generated), defaults are applied, generation is bumped when
    /// the spec changed, managedFields are kept from the existing object unless given.
    pub fn put_object(&self, mut obj: Value) {
        let api_version = obj["apiVersion"].as_str().unwrap_or("").to_string();
        let kind = obj["kind"].as_str().unwrap_or("").to_string();
        let res = resources::find_res(&api_version, &kind).unwrap_or_else(|| panic!("unknown type {api_version} {kind}"));
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        if resources::res(res).namespaced && obj.pointer("/metadata/namespace").is_none() {
            obj["metadata"]["namespace"] = json!("default");
        }
        let mut st = self.st();
        let key = State::key_of(res, &obj);
        resources::apply_defaults(res, &mut obj);
        match st.objects.get(&key).cloned() {
            Some(old) => {
                let md = obj["metadata"].as_object_mut().unwrap();
                for f in ["uid", "creationTimestamp", "generation", "managedFields"] {
                    if !md.contains_key(f)
                        && let Some(v) = old["metadata"].get(f)
                    {
                        md.insert(f.into(), v.clone());
                    }
                }
                if resources::res(res).generation && api::spec_part(&old) != api::spec_part(&obj) {
                    let g = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
                    obj["metadata"]["generation"] = json!(g + 1);
                }
                st.store(res, obj);
            }
            None => {
                st.init_meta(res, &mut obj);
                st.store(res, obj);
            }
        }
    }

    pub fn delete_object(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) {
        let Some(res) = resources::find_res(api_version, kind) else { return };
        let ns = if resources::res(res).namespaced { namespace.unwrap_or("default") } else { "" };
        self.st().remove_cascade(res, ns, name, false);
    }

    pub fn set_forbidden(&self, rules: Vec<(String, String, Option<String>)>) {
        self.st().opts.forbidden = rules;
    }

    /// Serves `/api/v1/namespaces/{ns}/services/{service}:{port}/proxy/...` by forwarding the
    /// method, headers and body to `target` (e.g. `http://127.0.0.1:41000`), as the real API
    /// server forwards to the service's endpoints. Without a target the proxy answers 503.
    pub fn register_proxy(&self, namespace: &str, service: &str, port: u16, target: &str) {
        self.st().proxies.insert((namespace.into(), service.into(), port.to_string()), target.trim_end_matches('/').to_string());
    }

    /// Decides whether workloads' pods start (see [`PodCheck`]).
    pub fn set_pod_check(&self, check: PodCheck) {
        let mut st = self.st();
        st.pod_check = Some(check);
        st.ctrl.touch();
    }

    /// The environment the first container of a workload (Deployment, StatefulSet, Job) gets.
    pub fn workload_env(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.handle().workload_env(api_version, kind, namespace, name)
    }

    /// A handle on the store that other threads may keep (a stand-in service behind the proxy
    /// reads its configuration through it).
    pub fn handle(&self) -> ServerHandle {
        ServerHandle(self.state.clone())
    }

    /// Gives the cluster a load-balancer implementation with these addresses (see
    /// [`Options::load_balancer_ips`]); pending Services get one at the next controller pass.
    pub fn set_load_balancer_ips(&self, ips: Vec<String>) {
        let mut st = self.st();
        st.opts.load_balancer_ips = ips;
        st.ctrl.touch();
    }

    pub fn set_ready_after(&self, d: Option<Duration>) {
        let mut st = self.st();
        st.opts.ready_after = d;
        st.ctrl.reset_timers();
    }
}

/// See [`TestServer::handle`].
#[derive(Clone)]
pub struct ServerHandle(Shared);

impl ServerHandle {
    /// The environment the first container of a workload gets (env and envFrom resolved).
    pub fn workload_env(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let res = resources::find_res(api_version, kind)?;
        let w = st.objects.get(&(res, namespace.to_string(), name.to_string()))?;
        Some(controller::container_env(&st, namespace, &w["spec"]["template"]["spec"]["containers"][0]))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[allow(dead_code)]
pub(crate) type CtrlMap = HashMap<String, (i64, std::time::Instant)>;

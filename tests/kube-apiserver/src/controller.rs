//! A tiny stand-in for kube-controller-manager + kubelet: pods and status
//! for Deployments, StatefulSets and Jobs.

use crate::api::record_update;
use crate::resources;
use crate::{State, new_uid, now_rfc3339};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

/// A workload's key in the store: (resource index, namespace, name).
type Key = (usize, String, String);

#[derive(Default)]
pub struct CtrlState {
    /// workload uid -> (generation, first seen at that generation)
    seen: HashMap<String, (i64, Instant)>,
    /// pod uids for which a warning event was emitted
    events: HashSet<String>,
    /// A pass looks at the workloads that changed (or whose pods did) since the last one, ...
    changed: BTreeSet<Key>,
    /// ... every workload in a namespace whose Secrets or ConfigMaps changed, when a pod check
    /// reads them, ...
    changed_namespaces: BTreeSet<String>,
    /// ... every workload when a setting it reads changed (ready_after, the pod check), ...
    dirty: bool,
    /// ... and the workloads whose ready_after timer is due.
    deadlines: HashMap<Key, Instant>,
    /// Services of type LoadBalancer that wait for an address, and Services that are no longer
    /// of that type but still hold one.
    pending_balancers: BTreeSet<Key>,
    /// A Service or a setting changed since the last pass over them.
    balancers_dirty: bool,
}

impl CtrlState {
    /// Notes a change of the store (every write goes through here) that a pass must look at.
    pub fn note(&mut self, res: usize, ns: &str, obj: &Value, pod_check: bool) {
        match res {
            resources::DEPLOY | resources::STS | resources::JOB => {
                self.changed.insert((res, ns.to_string(), obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string()));
            }
            resources::POD => {
                for owner in obj.pointer("/metadata/ownerReferences").and_then(Value::as_array).into_iter().flatten() {
                    let res = match owner["kind"].as_str() {
                        Some("Deployment") => resources::DEPLOY,
                        Some("StatefulSet") => resources::STS,
                        Some("Job") => resources::JOB,
                        _ => continue,
                    };
                    self.changed.insert((res, ns.to_string(), owner["name"].as_str().unwrap_or("").to_string()));
                }
            }
            resources::SVC => {
                let key = (res, ns.to_string(), obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string());
                let balancer = obj.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer");
                let assigned = obj.pointer("/status/loadBalancer/ingress/0").is_some();
                self.balancers_dirty = true;
                if balancer != assigned {
                    self.pending_balancers.insert(key);
                } else {
                    self.pending_balancers.remove(&key);
                }
            }
            resources::SECRET | resources::CM if pod_check => {
                self.changed_namespaces.insert(ns.to_string());
            }
            _ => {}
        }
    }

    pub fn reset_timers(&mut self) {
        let now = Instant::now();
        for v in self.seen.values_mut() {
            v.1 = now;
        }
        self.dirty = true;
    }

    /// A setting the controller reads changed: the next tick runs a pass.
    pub fn touch(&mut self) {
        self.dirty = true;
        self.balancers_dirty = true;
    }
}

/// Runs a reconcile pass over what changed: workloads and their pods, a setting, a readiness
/// timer. Idle, it costs nothing; busy, a pass costs what changed (plus one scan of the pods),
/// not every workload times every object.
pub fn tick(st: &mut State) {
    let now = Instant::now();
    let due = st.ctrl.deadlines.values().any(|d| *d <= now);
    if std::mem::take(&mut st.ctrl.balancers_dirty) && !st.ctrl.pending_balancers.is_empty() {
        assign_balancers(st);
    }
    if !st.ctrl.dirty && st.ctrl.changed.is_empty() && st.ctrl.changed_namespaces.is_empty() && !due {
        return;
    }
    reconcile(st);
}

/// What a load-balancer implementation does: gives each pending Service of type LoadBalancer
/// the first address of the pool that no other Service holds (the rest stay pending, as with
/// an exhausted MetalLB pool), and takes the address back from a Service whose type changed.
fn assign_balancers(st: &mut State) {
    let held = |st: &State| -> BTreeSet<String> {
        let first = (resources::SVC, String::new(), String::new());
        st.objects
            .range(first..)
            .take_while(|(k, _)| k.0 == resources::SVC)
            .filter_map(|(_, v)| v.pointer("/status/loadBalancer/ingress/0/ip").and_then(Value::as_str).map(str::to_string))
            .collect()
    };
    for key in std::mem::take(&mut st.ctrl.pending_balancers) {
        let Some(svc) = st.objects.get(&key) else { continue };
        if svc.pointer("/spec/type").and_then(Value::as_str) != Some("LoadBalancer") {
            set_status(st, key.0, &key, json!({"loadBalancer": {}}));
            continue;
        }
        let taken = held(st);
        match st.opts.load_balancer_ips.iter().find(|ip| !taken.contains(*ip)).cloned() {
            Some(ip) => set_status(st, key.0, &key, json!({"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}})),
            // Pending until an address is free or the pool grows (a setting: the next pass).
            None => {
                st.ctrl.pending_balancers.insert(key);
            }
        }
    }
}

fn hash_str(v: &Value) -> String {
    // FNV-1a over the JSON text, rendered with the k8s "safe" alphabet
    let mut h: u64 = 0xcbf29ce484222325;
    for b in v.to_string().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    const CH: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10).map(|i| CH[((h >> (i * 6)) % CH.len() as u64) as usize] as char).collect()
}

fn suffix() -> String {
    const CH: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes().iter().take(5).map(|b| CH[*b as usize % CH.len()] as char).collect()
}

fn set_status(st: &mut State, res: usize, key: &(usize, String, String), status: Value) {
    let Some(old) = st.objects.get(key).cloned() else { return };
    if old.get("status") == Some(&status) {
        return;
    }
    let mut new = old.clone();
    new["status"] = status;
    record_update(res, Some(&old), &mut new, "kube-controller-manager", "status");
    st.store(res, new);
}

#[derive(PartialEq, Clone, Copy)]
enum PodState {
    Creating,
    Running,
    Succeeded,
    Waiting,
}

fn pod_status(spec: &Value, state: PodState, waiting_reason: &str, started: &str) -> Value {
    let containers = spec.get("containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let cs: Vec<Value> = containers
        .iter()
        .map(|c| {
            let name = c["name"].clone();
            let image = c["image"].as_str().unwrap_or("").to_string();
            let (ready, st) = match state {
                PodState::Running => (true, json!({"running": {"startedAt": started}})),
                PodState::Succeeded => (false, json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": started}})),
                PodState::Creating => (false, json!({"waiting": {"reason": "ContainerCreating"}})),
                PodState::Waiting => {
                    let msg = if waiting_reason.contains("Image") || waiting_reason.contains("Pull") {
                        format!("Back-off pulling image \"{image}\"")
                    } else {
                        format!("back-off 5m0s restarting failed container={} pod", c["name"].as_str().unwrap_or(""))
                    };
                    (false, json!({"waiting": {"reason": waiting_reason, "message": msg}}))
                }
            };
            let mut s = json!({"name": name, "image": image, "imageID": "", "ready": ready, "restartCount": 0, "started": ready, "state": st, "lastState": {}});
            if ready {
                s["imageID"] = json!(format!("docker.io/library/{image}@sha256:0000"));
                s["containerID"] = json!(format!("containerd://{}", new_uid().replace('-', "")));
            }
            s
        })
        .collect();
    let t = |b: bool| if b { "True" } else { "False" };
    let ready = state == PodState::Running;
    let phase = match state {
        PodState::Running => "Running",
        PodState::Succeeded => "Succeeded",
        _ => "Pending",
    };
    let mut conds = vec![
        json!({"type": "PodReadyToStartContainers", "status": t(state != PodState::Creating), "lastProbeTime": null, "lastTransitionTime": started}),
        json!({"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": started}),
        json!({"type": "Ready", "status": t(ready), "lastProbeTime": null, "lastTransitionTime": started}),
        json!({"type": "ContainersReady", "status": t(ready), "lastProbeTime": null, "lastTransitionTime": started}),
        json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": started}),
    ];
    if !ready {
        for c in conds.iter_mut().filter(|c| c["type"] == "Ready" || c["type"] == "ContainersReady") {
            c["reason"] = json!(if state == PodState::Succeeded { "PodCompleted" } else { "ContainersNotReady" });
        }
    }
    json!({"phase": phase, "conditions": conds, "hostIP": "10.0.0.10", "hostIPs": [{"ip": "10.0.0.10"}],
           "podIP": "10.1.0.10", "podIPs": [{"ip": "10.1.0.10"}], "startTime": started, "qosClass": "BestEffort", "containerStatuses": cs})
}

/// A Secret's or ConfigMap's data as text (Secret values base64-decoded).
fn data_of(st: &State, res: usize, ns: &str, name: &str) -> BTreeMap<String, String> {
    use base64::Engine as _;
    let Some(o) = st.objects.get(&(res, ns.to_string(), name.to_string())) else { return BTreeMap::new() };
    let mut out = BTreeMap::new();
    for (k, v) in o["data"].as_object().into_iter().flatten() {
        let text = v.as_str().unwrap_or_default();
        let value = if res == resources::SECRET {
            base64::engine::general_purpose::STANDARD.decode(text).ok().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
        } else {
            text.to_string()
        };
        out.insert(k.clone(), value);
    }
    for (k, v) in o["stringData"].as_object().into_iter().flatten() {
        out.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
    }
    out
}

/// The environment a container gets: `envFrom` sources first, then `env` (values and
/// secret/configmap key references), as the kubelet resolves them.
pub fn container_env(st: &State, ns: &str, container: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for src in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = src["prefix"].as_str().unwrap_or_default();
        for (res, key) in [(resources::SECRET, "secretRef"), (resources::CM, "configMapRef")] {
            if let Some(name) = src[key]["name"].as_str() {
                for (k, v) in data_of(st, res, ns, name) {
                    env.insert(format!("{prefix}{k}"), v);
                }
            }
        }
    }
    for e in container["env"].as_array().into_iter().flatten() {
        let Some(name) = e["name"].as_str() else { continue };
        let value = if let Some(v) = e["value"].as_str() {
            Some(v.to_string())
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
            data_of(st, resources::SECRET, ns, r.get("name").and_then(Value::as_str).unwrap_or_default())
                .remove(r.get("key").and_then(Value::as_str).unwrap_or_default())
        } else if let Some(r) = e["valueFrom"]["configMapKeyRef"].as_object() {
            data_of(st, resources::CM, ns, r.get("name").and_then(Value::as_str).unwrap_or_default())
                .remove(r.get("key").and_then(Value::as_str).unwrap_or_default())
        } else {
            Some(String::new())
        };
        if let Some(v) = value {
            env.insert(name.to_string(), v);
        }
    }
    env
}

fn is_workload(res: usize) -> bool {
    matches!(res, resources::DEPLOY | resources::STS | resources::JOB)
}

pub fn reconcile(st: &mut State) {
    let now = Instant::now();
    let all = std::mem::take(&mut st.ctrl.dirty);
    let mut keys = std::mem::take(&mut st.ctrl.changed);
    let namespaces = std::mem::take(&mut st.ctrl.changed_namespaces);
    keys.extend(st.ctrl.deadlines.iter().filter(|(_, d)| **d <= now).map(|(k, _)| k.clone()));
    if all || !namespaces.is_empty() {
        keys.extend(st.objects.keys().filter(|k| is_workload(k.0) && (all || namespaces.contains(&k.1))).cloned());
    }
    if all {
        let live: HashSet<String> = st
            .objects
            .iter()
            .filter(|(k, _)| is_workload(k.0))
            .filter_map(|(_, v)| v.pointer("/metadata/uid").and_then(Value::as_str).map(String::from))
            .collect();
        st.ctrl.seen.retain(|k, _| live.contains(k));
    }
    let mut workloads = Vec::new();
    for key in keys {
        match st.objects.get(&key) {
            Some(w) => workloads.push((key, w.clone())),
            None => {
                st.ctrl.deadlines.remove(&key);
            }
        }
    }
    // Their pods, by owner uid, from one scan of the pods.
    let uids: HashSet<&str> = workloads.iter().filter_map(|(_, w)| w.pointer("/metadata/uid").and_then(Value::as_str)).collect();
    let mut pods: HashMap<String, Vec<(Key, Value)>> = HashMap::new();
    let first_pod = (resources::POD, String::new(), String::new());
    for (k, p) in st.objects.range(first_pod..).take_while(|(k, _)| k.0 == resources::POD) {
        for owner in p.pointer("/metadata/ownerReferences").and_then(Value::as_array).into_iter().flatten() {
            if let Some(uid) = owner["uid"].as_str().filter(|u| uids.contains(u)) {
                pods.entry(uid.to_string()).or_default().push((k.clone(), p.clone()));
            }
        }
    }
    for (key, w) in workloads {
        let res = key.0;
        let uid = w["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let gen_ = w.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
        let entry = st.ctrl.seen.entry(uid.clone()).or_insert((gen_, now));
        if entry.0 != gen_ {
            *entry = (gen_, now);
        }
        let since = entry.1;
        let mut ready = match st.opts.ready_after {
            Some(d) => now.duration_since(since) >= d,
            None => false,
        };
        let mut never = st.opts.ready_after.is_none();
        // A container that exits at start (the pod check says why) crash loops.
        let crash = match st.pod_check.clone() {
            Some(check) if res != resources::JOB => {
                let env = container_env(st, &key.1, &w["spec"]["template"]["spec"]["containers"][0]);
                check(&w, &env).err()
            }
            _ => None,
        };
        if crash.is_some() {
            ready = false;
            never = true;
        }
        match (ready, never, st.opts.ready_after) {
            (false, false, Some(d)) => st.ctrl.deadlines.insert(key.clone(), since + d),
            _ => st.ctrl.deadlines.remove(&key),
        };
        let is_job = res == resources::JOB;
        let replicas = if is_job { 1 } else { w.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1) };
        let template = w.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let hash = hash_str(&template);
        let ns = key.1.clone();
        let name = key.2.clone();
        // owned pods
        let owned: Vec<(Key, Value)> = pods.remove(&uid).unwrap_or_default().into_iter().filter(|(k, _)| k.1 == ns).collect();
        let mut keep = vec![];
        for (k, p) in owned {
            let h = p.pointer("/metadata/annotations/kdeploy.test~1template-hash").and_then(Value::as_str).unwrap_or("");
            if h != hash || keep.len() as i64 >= replicas {
                st.remove(k.0, &k.1, &k.2);
            } else {
                keep.push((k, p));
            }
        }
        let started = now_rfc3339();
        let mut idx = 0;
        while (keep.len() as i64) < replicas {
            let pod_name = match res {
                resources::STS => loop {
                    let n = format!("{name}-{idx}");
                    idx += 1;
                    if !keep.iter().any(|(k, _)| k.2 == n) {
                        break n;
                    }
                },
                resources::DEPLOY => format!("{name}-{}-{}", &hash[..10], suffix()),
                _ => format!("{name}-{}", suffix()),
            };
            let mut labels = template.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
            match res {
                resources::DEPLOY => labels["pod-template-hash"] = json!(&hash[..10]),
                resources::STS => {
                    labels["controller-revision-hash"] = json!(format!("{name}-{}", &hash[..10]));
                    labels["statefulset.kubernetes.io/pod-name"] = json!(pod_name);
                }
                _ => {}
            }
            let mut annotations = template.pointer("/metadata/annotations").cloned().unwrap_or(json!({}));
            annotations["kdeploy.test/template-hash"] = json!(hash);
            let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
            spec["nodeName"] = json!("kdeploy-test-node");
            let mut pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": ns, "labels": labels, "annotations": annotations,
                    "ownerReferences": [{"apiVersion": resources::res(res).api_version(), "kind": resources::res(res).kind, "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
                "spec": spec,
            });
            if res == resources::DEPLOY {
                pod["metadata"]["generateName"] = json!(format!("{name}-{}-", &hash[..10]));
            }
            st.init_meta(resources::POD, &mut pod);
            resources::apply_defaults(resources::POD, &mut pod);
            record_update(resources::POD, None, &mut pod, "kube-controller-manager", "");
            let p = st.store(resources::POD, pod);
            let k = crate::State::key_of(resources::POD, &p);
            keep.push((k, p));
        }
        // pod statuses
        let pstate = if ready {
            if is_job { PodState::Succeeded } else { PodState::Running }
        } else if never {
            PodState::Waiting
        } else {
            PodState::Creating
        };
        let waiting_reason = if crash.is_some() { "CrashLoopBackOff".to_string() } else { st.opts.waiting_reason.clone() };
        for (k, _) in &keep {
            match &crash {
                Some(log) => st.pod_logs.insert((k.1.clone(), k.2.clone()), log.clone()),
                None => st.pod_logs.remove(&(k.1.clone(), k.2.clone())),
            };
        }
        for (k, p) in &keep {
            let cur_phase = p.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
            let cur_wait = p.pointer("/status/containerStatuses/0/state/waiting/reason").and_then(Value::as_str).unwrap_or("");
            let up_to_date = match pstate {
                PodState::Running => cur_phase == "Running",
                PodState::Succeeded => cur_phase == "Succeeded",
                PodState::Creating => cur_wait == "ContainerCreating",
                PodState::Waiting => cur_wait == waiting_reason,
            };
            if !up_to_date {
                let s = pod_status(&p["spec"], pstate, &waiting_reason, &started);
                set_status(st, resources::POD, k, s);
            }
            let puid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
            if pstate == PodState::Waiting && !st.ctrl.events.contains(&puid) {
                st.ctrl.events.insert(puid.clone());
                let c0 = p.pointer("/spec/containers/0").cloned().unwrap_or(json!({}));
                let image = c0["image"].as_str().unwrap_or("").to_string();
                let msg = if waiting_reason.contains("Image") || waiting_reason.contains("Pull") {
                    format!("Failed to pull image \"{image}\": rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": not found")
                } else {
                    format!("Error: {waiting_reason}")
                };
                let ev_name = format!("{}.{}", k.2, &new_uid().replace('-', "")[..16]);
                let mut ev = json!({
                    "apiVersion": "v1", "kind": "Event",
                    "metadata": {"name": ev_name, "namespace": ns},
                    "involvedObject": {"kind": "Pod", "namespace": ns, "name": k.2, "uid": puid, "apiVersion": "v1",
                        "fieldPath": format!("spec.containers{{{}}}", c0["name"].as_str().unwrap_or(""))},
                    "reason": "Failed", "message": msg, "type": "Warning", "count": 1,
                    "source": {"component": "kubelet", "host": "kdeploy-test-node"},
                    "firstTimestamp": started, "lastTimestamp": started,
                    "reportingComponent": "kubelet", "reportingInstance": "kdeploy-test-node",
                });
                st.init_meta(resources::EVENT, &mut ev);
                st.store(resources::EVENT, ev);
            }
        }
        // workload status
        let n = replicas;
        let ready_n = if ready { n } else { 0 };
        let status = match res {
            resources::DEPLOY => {
                let mut s = json!({"observedGeneration": gen_});
                let old_conds = w.pointer("/status/conditions").cloned();
                let keep_time = |typ: &str, status: &str| -> String {
                    old_conds
                        .as_ref()
                        .and_then(Value::as_array)
                        .and_then(|a| a.iter().find(|c| c["type"] == typ && c["status"] == status))
                        .and_then(|c| c["lastTransitionTime"].as_str().map(String::from))
                        .unwrap_or_else(now_rfc3339)
                };
                if n > 0 {
                    s["replicas"] = json!(n);
                    s["updatedReplicas"] = json!(n);
                }
                if ready_n > 0 {
                    s["readyReplicas"] = json!(ready_n);
                    s["availableReplicas"] = json!(ready_n);
                }
                if n - ready_n > 0 {
                    s["unavailableReplicas"] = json!(n - ready_n);
                }
                let rs = format!("{name}-{}", &hash[..10]);
                let (avail, ar, am) = if ready {
                    ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
                } else {
                    ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
                };
                let (pr, pm) = if ready {
                    ("NewReplicaSetAvailable", format!("ReplicaSet \"{rs}\" has successfully progressed."))
                } else {
                    ("ReplicaSetUpdated", format!("ReplicaSet \"{rs}\" is progressing."))
                };
                let ta = keep_time("Available", avail);
                let tp = keep_time("Progressing", "True");
                s["conditions"] = json!([
                    {"type": "Available", "status": avail, "lastUpdateTime": ta, "lastTransitionTime": ta, "reason": ar, "message": am},
                    {"type": "Progressing", "status": "True", "lastUpdateTime": tp, "lastTransitionTime": tp, "reason": pr, "message": pm},
                ]);
                s
            }
            resources::STS => {
                let rev = format!("{name}-{}", &hash[..10]);
                json!({"observedGeneration": gen_, "replicas": n, "readyReplicas": ready_n, "currentReplicas": n, "updatedReplicas": n,
                       "availableReplicas": ready_n, "currentRevision": rev, "updateRevision": rev, "collisionCount": 0})
            }
            _ => {
                let start = w.pointer("/status/startTime").and_then(Value::as_str).map(String::from).unwrap_or_else(now_rfc3339);
                if ready {
                    let done = w.pointer("/status/completionTime").and_then(Value::as_str).map(String::from).unwrap_or_else(now_rfc3339);
                    json!({"startTime": start, "completionTime": done, "succeeded": 1, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {},
                           "conditions": [
                               {"type": "SuccessCriteriaMet", "status": "True", "lastProbeTime": done, "lastTransitionTime": done, "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods"},
                               {"type": "Complete", "status": "True", "lastProbeTime": done, "lastTransitionTime": done, "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods"}]})
                } else {
                    json!({"startTime": start, "active": 1, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {}})
                }
            }
        };
        set_status(st, res, &key, status);
    }
}

//! Rendering a component into the Kubernetes objects kdeploy owns: plain JSON manifests. What
//! each Kerberos component needs (image, environment, probe, volumes, steps) comes from the
//! runtime-neutral [`Workload`] of `kdeploy_provider::components`; this module only decides how
//! Kubernetes expresses it (a Secret for secret values, a StatefulSet or Deployment, init
//! containers, Jobs, a Service). Pure functions: no API calls here.

use std::collections::BTreeMap;

use kdeploy_provider::addr::Address;
use kdeploy_provider::components::{self, Controller, FileSource, Probe, Spec, Step, Workload, WorkloadError};
use kdeploy_provider::{ComponentRef, Kind, Reference, Value, images};
use serde_json::{Value as Json, json};

use crate::fields::digest;

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const ADDRESS_ANNOTATION: &str = "kdeploy.io/address";
pub const DIGEST_ANNOTATION: &str = "kdeploy.io/config-digest";
/// How long kdeploy waits for the workload to be ready after applying it (Go syntax).
pub const READINESS_TIMEOUT_ANNOTATION: &str = "kdeploy.io/readiness-timeout";

/// What rendering needs about one component.
pub struct Input<'a> {
    pub component: &'a ComponentRef,
    /// Inputs and computed attributes, all known.
    pub attrs: &'a BTreeMap<String, Value>,
    pub refs: &'a BTreeMap<String, Reference>,
    pub cluster: &'a BTreeMap<String, Value>,
}

impl Input<'_> {
    fn address(&self) -> &Address {
        &self.component.address
    }
    fn kind(&self) -> Kind {
        self.component.kind
    }
    fn s(&self, k: &str) -> String {
        str_of(self.attrs.get(k))
    }
    fn opt(&self, k: &str) -> Option<String> {
        match self.attrs.get(k) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }
    }
}

fn str_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// A DNS-1123 label (also a valid DNS-1035 service name) for an address, at most 45
/// characters so that suffixes like `-bucket-0123abcd` still fit in 63.
pub fn base_name(address: &Address) -> String {
    let mut out = address.slug();
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out = format!("k-{out}");
    }
    if out.len() > 45 {
        let h = digest(&json!(address.to_string()));
        out = format!("{}-{}", out[..36].trim_end_matches('-'), &h[..8]);
    }
    out
}

/// The name of a component's objects: the one an import adopted (the existing workload's,
/// recorded in [`kdeploy_provider::ADOPTED`]), else [`base_name`].
pub fn object_base(address: &Address, attrs: &BTreeMap<String, Value>) -> String {
    match adopted(attrs).and_then(|a| a.get("name")) {
        Some(Value::String(n)) if !n.is_empty() => n.clone(),
        _ => base_name(address),
    }
}

/// The name of a component's Service, which is also the host other components reach it at: the
/// existing Service an import adopted (the guide's `vault-nodeport`), else [`object_base`].
pub fn service_name(address: &Address, attrs: &BTreeMap<String, Value>) -> String {
    match adopted(attrs).and_then(|a| a.get("service")) {
        Some(Value::String(n)) if !n.is_empty() => n.clone(),
        _ => object_base(address, attrs),
    }
}

/// What an import recorded about the objects it took over.
pub fn adopted(attrs: &BTreeMap<String, Value>) -> Option<&BTreeMap<String, Value>> {
    attrs.get(kdeploy_provider::ADOPTED).and_then(Value::as_map)
}

/// The selector labels an adopted workload had: a Deployment's or StatefulSet's selector cannot
/// change, so kdeploy keeps it (and puts its labels on the pods) instead of its own.
fn adopted_selector(attrs: &BTreeMap<String, Value>) -> Option<Json> {
    let m = adopted(attrs)?.get("selector")?.as_map()?;
    (!m.is_empty()).then(|| Json::Object(m.iter().map(|(k, v)| (k.clone(), json!(str_of(Some(v))))).collect()))
}

/// The component's `namespace`, else one per kind (per type for brokers: `rabbitmq`,
/// `mosquitto`, ...).
pub fn namespace(component: &ComponentRef, attrs: &BTreeMap<String, Value>) -> String {
    match attrs.get("namespace") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => kdeploy_provider::names::default_namespace(component.kind, &component.type_name).to_string(),
    }
}

fn kind_label(kind: Kind) -> String {
    kind.keyword().replace('_', "-")
}

/// Labels on every object: ownership, component identity, and the user's labels.
pub fn labels(inp: &Input<'_>) -> Json {
    let mut m = serde_json::Map::new();
    if let Some(Value::Map(user)) = inp.attrs.get("labels") {
        for (k, v) in user {
            m.insert(k.clone(), json!(str_of(Some(v))));
        }
    }
    m.insert(MANAGED_BY.into(), json!("kdeploy"));
    m.insert("app.kubernetes.io/name".into(), json!(kind_label(inp.kind())));
    m.insert("app.kubernetes.io/instance".into(), json!(object_base(inp.address(), inp.attrs)));
    m.insert("app.kubernetes.io/part-of".into(), json!("kerberos"));
    Json::Object(m)
}

fn selector(inp: &Input<'_>) -> Json {
    adopted_selector(inp.attrs)
        .unwrap_or_else(|| json!({"app.kubernetes.io/name": kind_label(inp.kind()), "app.kubernetes.io/instance": object_base(inp.address(), inp.attrs)}))
}

/// The labels of a workload's pods: every object's, and the selector's (an adopted one's differ).
fn pod_labels(inp: &Input<'_>) -> Json {
    let mut l = labels(inp);
    if let (Some(m), Json::Object(sel)) = (l.as_object_mut(), selector(inp)) {
        m.extend(sel);
    }
    l
}

/// `shape` with each value moved to its place (a JSON pointer to a `null` left for it). A value
/// interpolated by `json!` is copied through serde, a whole pod spec at each level of nesting;
/// this moves it, and keeps the keys in the order `shape` gives them.
fn fill<const N: usize>(mut shape: Json, values: [(&str, Json); N]) -> Json {
    for (place, value) in values {
        if let Some(slot) = shape.pointer_mut(place) {
            *slot = value;
        }
    }
    shape
}

fn meta(inp: &Input<'_>, name: &str, ns: Option<&str>) -> Json {
    let mut m = fill(json!({"name": name, "labels": null, "annotations": {ADDRESS_ANNOTATION: inp.address().to_string()}}), [("/labels", labels(inp))]);
    if let Some(ns) = ns {
        m["namespace"] = json!(ns);
    }
    m
}

/// Secrets carry base64 `data` (not `stringData`, which the API server does not keep), so the
/// fields kdeploy owns include the values and a changed value shows as drift.
fn secret(inp: &Input<'_>, name: &str, ns: &str, data: &[(&str, String)]) -> Json {
    use base64::Engine as _;
    let data: serde_json::Map<String, Json> =
        data.iter().map(|(k, v)| (k.to_string(), Json::String(base64::engine::general_purpose::STANDARD.encode(v)))).collect();
    fill(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": null, "type": "Opaque", "data": null}),
        [("/metadata", meta(inp, name, Some(ns))), ("/data", Json::Object(data))],
    )
}

fn service(inp: &Input<'_>, name: &str, ns: &str, w: &Workload) -> Json {
    let node_port_type = w.service_type == "NodePort";
    let ports: Vec<Json> = w
        .ports
        .iter()
        .map(|p| {
            let mut port = json!({"name": p.name, "port": p.port, "targetPort": p.port, "protocol": p.protocol.kubernetes()});
            if let (true, Some(np)) = (node_port_type, p.published) {
                port["nodePort"] = json!(np);
            }
            port
        })
        .collect();
    let service_type = if w.ports.iter().any(|p| p.published.is_some()) { w.service_type.as_str() } else { "ClusterIP" };
    fill(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": null, "spec": {"type": service_type, "selector": null, "ports": null}}),
        [("/metadata", meta(inp, name, Some(ns))), ("/spec/selector", selector(inp)), ("/spec/ports", Json::Array(ports))],
    )
}

/// An Ingress in front of the first port when `ingress_host` is set: TLS from
/// `ingress_tls_secret`, or from a certificate cert-manager issues into `<name>-tls` when
/// `cert_issuer` names a ClusterIssuer; plain HTTP with neither.
fn ingress(inp: &Input<'_>, name: &str, ns: &str, w: &Workload) -> Option<Json> {
    let host = inp.opt("ingress_host")?;
    let port = w.ports.first()?;
    let mut obj = fill(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": null, "spec": {"rules": [{"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": name, "port": {"number": port.port}}}}]}}]}}),
        [("/metadata", meta(inp, name, Some(ns)))],
    );
    if let Some(class) = inp.opt("ingress_class") {
        obj["spec"]["ingressClassName"] = json!(class);
    }
    let issuer = inp.opt("cert_issuer");
    if let Some(issuer) = &issuer {
        obj["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] = json!(issuer);
    }
    if let Some(secret) = inp.opt("ingress_tls_secret").or_else(|| issuer.map(|_| format!("{name}-tls"))) {
        obj["spec"]["tls"] = json!([{"hosts": [host], "secretName": secret}]);
    }
    Some(obj)
}

/// A pod template whose annotation changes when `config` changes, so pods roll when a
/// referenced password or key changes.
fn pod_template(inp: &Input<'_>, config: &Json, spec: Json) -> Json {
    fill(
        json!({"metadata": {"labels": null, "annotations": {DIGEST_ANNOTATION: digest(config)}}, "spec": null}),
        [("/metadata/labels", pod_labels(inp)), ("/spec", spec)],
    )
}

fn storage_class(inp: &Input<'_>) -> Option<String> {
    match inp.cluster.get("storage_class") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn claim_spec(inp: &Input<'_>, size: &str) -> Json {
    let mut spec = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}});
    if let Some(sc) = storage_class(inp) {
        spec["storageClassName"] = json!(sc);
    }
    spec
}

fn job(inp: &Input<'_>, prefix: &str, ns: &str, container: Json, pod_extra: &Json) -> Json {
    // Jobs are immutable: a changed job gets a new name (the digest of its spec).
    let name = format!("{prefix}-{}", &digest(&container)[..8]);
    let mut pod = fill(json!({"restartPolicy": "OnFailure", "containers": [null]}), [("/containers/0", container)]);
    if let Some(extra) = pod_extra.as_object() {
        for (k, v) in extra {
            pod[k] = v.clone();
        }
    }
    fill(
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": null, "spec": {"backoffLimit": 6, "template": {"metadata": {"labels": null}, "spec": null}}}),
        [("/metadata", meta(inp, &name, Some(ns))), ("/spec/template/metadata/labels", labels(inp)), ("/spec/template/spec", pod)],
    )
}

fn probe(p: &Probe) -> Json {
    match p {
        Probe::Http { path, port, .. } => json!({"httpGet": {"path": path, "port": port}, "periodSeconds": Probe::PERIOD_SECS}),
        Probe::Exec(argv) => json!({"exec": {"command": argv}, "periodSeconds": Probe::PERIOD_SECS}),
    }
}

/// The Secret holding a workload's secret environment (its keys are the variable names).
fn secret_name(base: &str) -> String {
    base.to_string()
}

/// Environment: plain values inline, secret ones from the component's Secret.
fn container_env(env: &[components::EnvVar], secret: &str) -> Json {
    Json::Array(
        env.iter()
            .map(|e| {
                if e.secret {
                    json!({"name": e.name, "valueFrom": {"secretKeyRef": {"name": secret, "key": e.name}}})
                } else {
                    json!({"name": e.name, "value": e.value})
                }
            })
            .collect(),
    )
}

fn step_container(step: &Step, secret: &str) -> Json {
    let mut c = json!({"name": step.name, "image": step.image, "command": step.command});
    if !step.env.is_empty() {
        c["env"] = container_env(&step.env, secret);
    }
    if step.run_as_root {
        c["securityContext"] = json!({"runAsUser": 0});
    }
    if !step.mounts.is_empty() {
        c["volumeMounts"] = Json::Array(step.mounts.iter().map(|m| json!({"name": m.volume, "mountPath": m.path})).collect());
    }
    c
}

/// Objects for a component that runs as a container, from its workload.
fn workload_objects(inp: &Input<'_>, w: &Workload, ns: &str, base: &str) -> Result<Vec<Json>, String> {
    let secret_ref = secret_name(base);
    let secret_data: Vec<(&str, String)> =
        w.env.iter().chain(w.jobs.iter().flat_map(|j| j.env.iter())).filter(|e| e.secret).map(|e| (e.name.as_str(), e.value.clone())).collect();
    let mut objects = Vec::new();
    if !secret_data.is_empty() {
        objects.push(secret(inp, &secret_ref, ns, &secret_data));
    }
    // Files: inline ones from a Secret of their own, existing Secrets mounted by key.
    let mut volumes: Vec<Json> = Vec::new();
    let mut file_mounts: Vec<Json> = Vec::new();
    let inline: Vec<(String, String)> = w
        .files
        .iter()
        .filter_map(|f| match &f.source {
            FileSource::Inline(text) => Some((file_key(&f.path), text.clone())),
            FileSource::Secret { .. } => None,
        })
        .collect();
    if !inline.is_empty() {
        let data: Vec<(&str, String)> = inline.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        objects.push(secret(inp, &format!("{base}-files"), ns, &data));
    }
    for (i, f) in w.files.iter().enumerate() {
        let vol = format!("file-{i}");
        let (secret_name, key) = match &f.source {
            FileSource::Inline(_) => (format!("{base}-files"), file_key(&f.path)),
            FileSource::Secret { name, key } => (name.clone(), key.clone()),
        };
        volumes.push(json!({"name": vol, "secret": {"secretName": secret_name, "items": [{"key": key, "path": "file"}]}}));
        file_mounts.push(json!({"name": vol, "mountPath": f.path, "subPath": "file", "readOnly": true}));
    }
    let mut c = fill(json!({"name": w.container, "image": w.image, "env": null}), [("/env", container_env(&w.env, &secret_ref))]);
    if let Some(args) = &w.args {
        c["args"] = json!(args);
    }
    if !w.ports.is_empty() {
        c["ports"] = Json::Array(w.ports.iter().map(|p| json!({"name": p.name, "containerPort": p.port, "protocol": p.protocol.kubernetes()})).collect());
    }
    if let Some(p) = &w.probe {
        c["readinessProbe"] = probe(p);
    }
    if let Some(r) = &w.resources {
        c["resources"] = json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": r.cpu, "memory": r.memory}});
    }
    let mut mounts: Vec<Json> = w
        .mounts
        .iter()
        .map(|m| {
            let mut j = json!({"name": m.volume, "mountPath": m.path});
            if let Some(sub) = m.sub_path {
                j["subPath"] = json!(sub);
            }
            j
        })
        .collect();
    mounts.extend(file_mounts);
    if !mounts.is_empty() {
        c["volumeMounts"] = Json::Array(mounts);
    }
    let mut init: Vec<Json> = w
        .waits
        .iter()
        .map(|(host, port)| {
            json!({
                "name": "wait-for-database", "image": images::BUSYBOX,
                "command": ["/bin/sh", "-c", format!("until nc -z {host} {port}; do echo waiting for {host}:{port}; sleep 2; done")],
            })
        })
        .collect();
    init.extend(w.seed.iter().map(|s| step_container(s, &secret_ref)));
    let mut pod = fill(json!({"containers": [null]}), [("/containers/0", c)]);
    if !init.is_empty() {
        pod["initContainers"] = Json::Array(init);
    }
    let mut security = serde_json::Map::new();
    if let Some(u) = w.security.run_as_user {
        security.insert("runAsUser".into(), json!(u));
    }
    if let Some(g) = w.security.fs_group {
        security.insert("fsGroup".into(), json!(g));
    }
    if !security.is_empty() {
        pod["securityContext"] = Json::Object(security);
    }
    // One claim per volume; a StatefulSet makes them from templates.
    let mut claims: BTreeMap<&str, &str> = BTreeMap::new();
    for m in w.mounts.iter().chain(w.seed.iter().flat_map(|s| s.mounts.iter())) {
        claims.entry(m.volume).or_insert(m.size.as_str());
    }
    if w.controller != Controller::Stateful {
        for (vol, size) in &claims {
            let claim = format!("{base}-{vol}");
            volumes.push(json!({"name": vol, "persistentVolumeClaim": {"claimName": claim}}));
            objects.push(fill(
                json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": null, "spec": null}),
                [("/metadata", meta(inp, &claim, Some(ns))), ("/spec", claim_spec(inp, size))],
            ));
        }
    }
    if !volumes.is_empty() {
        pod["volumes"] = Json::Array(volumes);
    }
    let config = json!({"env": w.env.iter().map(|e| (e.name.clone(), e.value.clone())).collect::<BTreeMap<_, _>>(), "files": w.files.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>()});
    let template = pod_template(inp, &config, pod);
    let workload = match w.controller {
        Controller::Stateful => {
            let templates: Vec<Json> = claims
                .iter()
                .map(|(vol, size)| {
                    fill(
                        json!({"metadata": {"name": vol, "labels": null}, "spec": null}),
                        [("/metadata/labels", labels(inp)), ("/spec", claim_spec(inp, size))],
                    )
                })
                .collect();
            fill(
                json!({
                    "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": null,
                    "spec": {"serviceName": base, "replicas": 1, "selector": {"matchLabels": null}, "template": null, "volumeClaimTemplates": null}
                }),
                [
                    ("/metadata", meta(inp, base, Some(ns))),
                    ("/spec/selector/matchLabels", selector(inp)),
                    ("/spec/template", template),
                    ("/spec/volumeClaimTemplates", Json::Array(templates)),
                ],
            )
        }
        Controller::Recreate | Controller::Rolling => {
            let mut spec = fill(
                json!({"replicas": 1, "selector": {"matchLabels": null}, "template": null}),
                [("/selector/matchLabels", selector(inp)), ("/template", template)],
            );
            if w.controller == Controller::Recreate {
                spec["strategy"] = json!({"type": "Recreate"});
            }
            if w.min_ready_seconds > 0 {
                spec["minReadySeconds"] = json!(w.min_ready_seconds);
            }
            fill(
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": null, "spec": null}),
                [("/metadata", meta(inp, base, Some(ns))), ("/spec", spec)],
            )
        }
    };
    let factory = inp.kind() == Kind::Factory;
    if factory {
        objects.extend(factory_access(inp, ns, base));
    }
    let mut workload = workload;
    workload["metadata"]["annotations"][READINESS_TIMEOUT_ANNOTATION] = json!(w.readiness_timeout.to_string());
    if factory {
        workload["spec"]["template"]["spec"]["serviceAccountName"] = json!(base);
        workload["spec"]["template"]["spec"]["automountServiceAccountToken"] = json!(true);
    }
    objects.push(workload);
    if w.serves && !w.ports.is_empty() {
        let name = service_name(inp.address(), inp.attrs);
        objects.push(service(inp, &name, ns, w));
        objects.extend(ingress(inp, &name, ns, w));
    }
    for step in &w.jobs {
        objects.push(job(inp, &format!("{base}-{}", job_suffix(step.name)), ns, step_container(step, &secret_ref), &json!({})));
    }
    Ok(objects)
}

/// The readiness timeout rendered on a component's workload object, if it has one.
pub fn readiness_timeout(objects: &[Json]) -> Option<kdeploy_provider::Duration> {
    objects.iter().find_map(|o| o["metadata"]["annotations"][READINESS_TIMEOUT_ANNOTATION].as_str()).and_then(|t| kdeploy_provider::Duration::parse(t).ok())
}

/// `create-bucket` → `bucket`, `declare-queue` → `queue`: the Job name suffix.
fn job_suffix(step: &str) -> &str {
    step.rsplit('-').next().unwrap_or(step)
}

/// A Secret key for a file path (`/certs/ca.pem` → `ca.pem`).
fn file_key(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

/// Factory creates agents through the Kubernetes API: its service account and what it may do.
fn factory_access(inp: &Input<'_>, ns: &str, base: &str) -> Vec<Json> {
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta(inp, &format!("{ns}-{base}"), None),
        "rules": [{
            "apiGroups": ["", "apps"],
            "resources": ["pods", "pods/log", "deployments", "services", "services/proxy", "endpoints", "nodes", "configmaps"],
            "verbs": ["get", "list", "create", "update", "delete", "watch", "patch"],
        }]
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": meta(inp, &format!("{ns}-{base}"), None),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{ns}-{base}")},
        "subjects": [{"kind": "ServiceAccount", "name": base, "namespace": ns}],
    });
    vec![json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(inp, base, Some(ns))}), role, binding]
}

/// Objects for one component, in apply order (configuration before workloads). `Ok(None)` while
/// a value it needs is known only after apply.
pub fn render(inp: &Input<'_>) -> Result<Option<Vec<Json>>, String> {
    let ns = namespace(inp.component, inp.attrs);
    let base = object_base(inp.address(), inp.attrs);
    let ns = ns.as_str();
    if inp.kind() == Kind::DriftSchedule {
        return Ok(Some(drift_schedule(inp, ns, &base)));
    }
    let spec = Spec { component: inp.component, attrs: inp.attrs, refs: inp.refs, namespace: Some(ns) };
    match components::workload(&spec) {
        Ok(w) => workload_objects(inp, &w, ns, &base).map(Some),
        Err(WorkloadError::Unknown) => Ok(None),
        Err(WorkloadError::Invalid(m)) => Err(m),
    }
}

/// A nightly `kdeploy drift` CronJob with read-only access to what it reads.
fn drift_schedule(inp: &Input<'_>, ns: &str, base: &str) -> Vec<Json> {
    // Read-only access to what `kdeploy drift` reads, and nothing else.
    let read_rules = json!([
        {"apiGroups": [""], "resources": ["secrets", "configmaps", "services", "services/proxy", "persistentvolumeclaims", "serviceaccounts", "pods", "events"], "verbs": ["get", "list"]},
        {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": ["get", "list"]},
        {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": ["get", "list"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list"]},
    ]);
    let mut objects = vec![json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(inp, base, Some(ns))})];
    let files: BTreeMap<String, String> = match inp.attrs.get("files") {
        Some(Value::Map(m)) => m.iter().map(|(k, v)| (k.clone(), str_of(Some(v)))).collect(),
        _ => BTreeMap::new(),
    };
    objects.push(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(inp, &format!("{base}-stack"), Some(ns)), "data": files}));
    let notify = inp.opt("notify");
    if let Some(url) = &notify {
        objects.push(secret(inp, base, ns, &[("NOTIFY_URL", url.clone())]));
    }
    let mut namespaces: Vec<String> = match inp.attrs.get("namespaces") {
        Some(Value::List(l)) => l.iter().map(|v| str_of(Some(v))).filter(|n| !n.is_empty()).collect(),
        _ => Vec::new(),
    };
    namespaces.sort();
    namespaces.dedup();
    for target in &namespaces {
        let name = format!("{base}-read");
        objects.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta(inp, &name, Some(target)), "rules": read_rules}));
        objects.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta(inp, &name, Some(target)),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": base, "namespace": ns}],
        }));
    }
    let cluster_name = format!("{ns}-{base}-read");
    objects.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta(inp, &cluster_name, None),
        "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles", "clusterrolebindings"], "verbs": ["get", "list"]}],
    }));
    objects.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": meta(inp, &cluster_name, None),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_name},
        "subjects": [{"kind": "ServiceAccount", "name": base, "namespace": ns}],
    }));
    let mut args = vec!["-C".to_string(), "/stack".into(), "drift".into(), "--detailed-exitcode".into()];
    let mut env = vec![json!({"name": "NO_COLOR", "value": "1"})];
    if notify.is_some() {
        args.extend(["--notify".to_string(), "$(NOTIFY_URL)".into()]);
        env.push(json!({"name": "NOTIFY_URL", "valueFrom": {"secretKeyRef": {"name": base, "key": "NOTIFY_URL"}}}));
    }
    objects.push(json!({
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta(inp, base, Some(ns)),
        "spec": {
            "schedule": inp.s("schedule"), "concurrencyPolicy": "Forbid", "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 5,
            "jobTemplate": {"spec": {"backoffLimit": 0, "template": {"metadata": {"labels": labels(inp)}, "spec": {
                "serviceAccountName": base, "restartPolicy": "Never",
                "containers": [{
                    "name": "drift", "image": inp.s("image"), "args": args, "env": env,
                    "volumeMounts": [{"name": "stack", "mountPath": "/stack", "readOnly": true}],
                    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
                }],
                "volumes": [{"name": "stack", "configMap": {"name": format!("{base}-stack")}}],
            }}}},
        }
    }));
    objects
}
/// `apiVersion/Kind/namespace/name`, the key of an object in the `objects` attribute.
pub fn object_key(obj: &Json) -> String {
    format!(
        "{}/{}/{}/{}",
        obj["apiVersion"].as_str().unwrap_or_default(),
        obj["kind"].as_str().unwrap_or_default(),
        obj["metadata"]["namespace"].as_str().unwrap_or_default(),
        obj["metadata"]["name"].as_str().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdeploy_provider::components::{secrets, vault};

    fn attrs(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn cref(address: &str, kind: Kind) -> ComponentRef {
        ComponentRef { address: address.parse().unwrap(), kind, type_name: "kerberos".into() }
    }

    #[test]
    fn names_are_dns_labels() {
        let a = |t: &str| t.parse::<Address>().unwrap();
        assert_eq!(base_name(&a("agent.cam[\"Front Door\"]")), "agent-cam-front-door");
        assert_eq!(base_name(&a("module.site[\"a\"].vault.main")), "site-a-vault-main");
        let long = base_name(&a(&format!("agent.cam[\"{}\"]", "x".repeat(80))));
        assert!(long.len() <= 45 && long.starts_with("agent-cam-xxx"), "{long}");
    }

    #[test]
    fn an_adopted_agent_keeps_the_name_and_selector_it_had() {
        let mut a = attrs(&[("rtsp_url", Value::string("rtsp://10.0.0.1/s1")), ("directory", Value::string("edge"))]);
        secrets::fill(Kind::Agent, "kerberos", "agent.cam[\"front\"]", &mut a, &BTreeMap::new(), true);
        let selector = Value::Map([("app".to_string(), Value::string("agent1"))].into());
        a.insert(kdeploy_provider::ADOPTED.into(), Value::Map([("name".to_string(), Value::string("agent1")), ("selector".to_string(), selector)].into()));
        let refs = vault_ref();
        let c = cref("agent.cam[\"front\"]", Kind::Agent);
        let objs = render(&Input { component: &c, attrs: &a, refs: &refs, cluster: &BTreeMap::new() }).unwrap().unwrap();
        assert!(objs.iter().all(|o| o["metadata"]["name"] == "agent1"), "{objs:#?}");
        let dep = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
        assert_eq!(dep["spec"]["selector"]["matchLabels"], json!({"app": "agent1"}));
        let pod_labels = &dep["spec"]["template"]["metadata"]["labels"];
        assert_eq!((&pod_labels["app"], &pod_labels["app.kubernetes.io/managed-by"]), (&json!("agent1"), &json!("kdeploy")));
        assert_eq!(object_base(&c.address, &a), "agent1");
        assert_eq!(object_base(&c.address, &BTreeMap::new()), "agent-cam-front");
    }

    #[test]
    fn a_coturn_load_balancer_carries_turn_over_tcp_and_udp_and_each_relay_port() {
        let a = attrs(&[
            ("service_type", Value::string("LoadBalancer")),
            ("relay_ports", Value::string("40000-40001")),
            ("node_port", Value::Number(30478.into())),
            ("admin_password", Value::string("pw")),
        ]);
        let c = ComponentRef { address: "turn.relay".parse().unwrap(), kind: Kind::Turn, type_name: "coturn".into() };
        let objs = render(&Input { component: &c, attrs: &a, refs: &BTreeMap::new(), cluster: &BTreeMap::new() }).unwrap().unwrap();
        let svc = objs.iter().find(|o| o["kind"] == "Service").unwrap();
        assert_eq!(svc["spec"]["type"], "LoadBalancer");
        let ports: Vec<(&str, &str, u64, bool)> = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), p["protocol"].as_str().unwrap(), p["port"].as_u64().unwrap(), p.get("nodePort").is_some()))
            .collect();
        assert_eq!(
            ports,
            vec![("turn", "TCP", 3478, false), ("turn-udp", "UDP", 3478, false), ("relay-40000", "UDP", 40000, false), ("relay-40001", "UDP", 40001, false)],
            "the same ports as a NodePort Service, on the LoadBalancer's address"
        );
        let dep = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
        let declared = &dep["spec"]["template"]["spec"]["containers"][0]["ports"];
        assert_eq!(declared[3], json!({"name": "relay-40001", "containerPort": 40001, "protocol": "UDP"}));
    }

    fn vault_ref() -> BTreeMap<String, Reference> {
        let mut v = attrs(&[("storage", Value::string("object_storage.rec")), ("endpoint", Value::string("http://vault-main.kerberos-vault:80/api"))]);
        vault::fill_accounts("vault.main", &mut v, &mut |k| Some(format!("{k}-value")));
        [("vault".to_string(), Reference { component: cref("vault.main", Kind::Vault), attributes: Value::Map(v).into() })].into()
    }

    #[test]
    fn agent_env_is_explicit_and_secrets_stay_in_the_secret() {
        let mut a = attrs(&[
            ("rtsp_url", Value::string("rtsp://u:p@10.0.0.1/s1")),
            ("timezone", Value::string("UTC")),
            ("mqtt_uri", Value::string("")),
            ("continuous", Value::Bool(false)),
            ("directory", Value::string("edge")),
            ("login_username", Value::string("admin")),
        ]);
        secrets::fill(Kind::Agent, "kerberos", "agent.cam[\"front\"]", &mut a, &BTreeMap::new(), true);
        let refs = vault_ref();
        let c = cref("agent.cam[\"front\"]", Kind::Agent);
        let objs = render(&Input { component: &c, attrs: &a, refs: &refs, cluster: &BTreeMap::new() }).unwrap().unwrap();
        assert_eq!(objs.iter().map(|o| o["kind"].as_str().unwrap()).collect::<Vec<_>>(), ["Secret", "Deployment"]);
        let dep = &objs[1];
        assert_eq!(dep["metadata"]["namespace"], "kerberos-agent");
        assert_eq!(dep["metadata"]["labels"][MANAGED_BY], "kdeploy");
        assert_eq!(dep["spec"]["template"]["spec"]["securityContext"]["fsGroup"], 101, "the volume group is an attribute, not hard-coded in a chown");
        let env = dep["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
        let get = |n: &str| env.iter().find(|e| e["name"] == n).cloned().unwrap_or_else(|| panic!("{n}"));
        assert_eq!(get("AGENT_MQTT_URI")["value"], "", "explicit, never the public default");
        assert_eq!(get("AGENT_NAME")["value"], "front");
        assert_eq!(get("AGENT_KERBEROSVAULT_DIRECTORY")["value"], "edge");
        assert_eq!(get("AGENT_PASSWORD")["valueFrom"]["secretKeyRef"]["key"], "AGENT_PASSWORD");
        let text = dep.to_string();
        assert!(!text.contains("secret_key-value") && !text.contains("u:p@"), "secrets only in the Secret: {text}");
        use base64::Engine as _;
        assert_eq!(objs[0]["data"]["AGENT_KERBEROSVAULT_SECRET_KEY"], base64::engine::general_purpose::STANDARD.encode("secret_key-value"));
    }

    fn vault_objects(db_password: &str) -> Vec<Json> {
        let mut a = attrs(&[
            ("storage", Value::string("object_storage.rec")),
            ("database", Value::string("database.meta")),
            ("service_type", Value::string("NodePort")),
            ("node_port", Value::from_i64(30080)),
            ("admin_password", Value::string("x")),
            ("login_username", Value::string("root")),
        ]);
        secrets::fill(Kind::Vault, "kerberos", "vault.main", &mut a, &BTreeMap::new(), true);
        let db = Reference {
            component: ComponentRef { address: "database.meta".parse().unwrap(), kind: Kind::Database, type_name: "mongodb".into() },
            attributes: Value::Map(attrs(&[
                ("host", Value::string("mongodb-meta.mongodb")),
                ("port", Value::from_i64(27017)),
                ("username", Value::string("root")),
                ("admin_password", Value::string(db_password)),
            ]))
            .into(),
        };
        let storage = Reference {
            component: ComponentRef { address: "object_storage.rec".parse().unwrap(), kind: Kind::ObjectStorage, type_name: "minio".into() },
            attributes: Value::Map(attrs(&[
                ("bucket", Value::string("r")),
                ("endpoint", Value::string("m:9000")),
                ("access_key", Value::string("A")),
                ("secret_key", Value::string("S")),
            ]))
            .into(),
        };
        let refs: BTreeMap<String, Reference> = [("database".to_string(), db), ("storage".to_string(), storage)].into();
        let c = cref("vault.main", Kind::Vault);
        render(&Input { component: &c, attrs: &a, refs: &refs, cluster: &BTreeMap::new() }).unwrap().unwrap()
    }

    #[test]
    fn a_changed_referenced_secret_rolls_the_pods() {
        let d1 = vault_objects("one");
        let d2 = vault_objects("two");
        let ann =
            |objs: &[Json]| objs.iter().find(|o| o["kind"] == "Deployment").unwrap()["spec"]["template"]["metadata"]["annotations"][DIGEST_ANNOTATION].clone();
        assert_ne!(ann(&d1), ann(&d2));
        let svc = d1.iter().find(|o| o["kind"] == "Service").unwrap();
        assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30080);
        let init = &d1.iter().find(|o| o["kind"] == "Deployment").unwrap()["spec"]["template"]["spec"]["initContainers"][0]["command"][2];
        assert!(init.as_str().unwrap().contains("nc -z mongodb-meta.mongodb 27017"), "waits on the real database endpoint: {init}");
        let secret = d1.iter().find(|o| o["kind"] == "Secret").unwrap();
        for var in ["VAULT_STORAGE_PROVIDERS", "VAULT_INTEGRATIONS", "VAULT_ACCOUNTS"] {
            assert!(secret["data"][var].is_string(), "{var} is kept in the Secret");
        }
        assert!(
            secret["data"].get("STORAGE_ACCESS_KEY").is_none() && secret["data"].get("ACCOUNT_ACCESS_KEY").is_none(),
            "variables Vault never reads are gone"
        );
    }
}

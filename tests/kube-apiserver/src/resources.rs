//! The resource table, defaulting and validation.

use serde_json::{Map, Value, json};

pub struct Res {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short: &'static [&'static str],
    /// Has a status subresource (status is ignored on the main resource).
    pub status: bool,
    /// metadata.generation is maintained.
    pub generation: bool,
}

const fn r(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
    generation: bool,
) -> Res {
    Res { group, version, plural, singular, kind, namespaced, short, status, generation }
}

pub static RESOURCES: &[Res] = &[
    r("", "v1", "namespaces", "namespace", "Namespace", false, &["ns"], true, false),
    r("", "v1", "configmaps", "configmap", "ConfigMap", true, &["cm"], false, false),
    r("", "v1", "secrets", "secret", "Secret", true, &[], false, false),
    r("", "v1", "services", "service", "Service", true, &["svc"], true, false),
    r("", "v1", "persistentvolumeclaims", "persistentvolumeclaim", "PersistentVolumeClaim", true, &["pvc"], true, false),
    r("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", true, &["sa"], false, false),
    r("", "v1", "pods", "pod", "Pod", true, &["po"], true, true),
    r("", "v1", "events", "event", "Event", true, &["ev"], false, false),
    r("apps", "v1", "deployments", "deployment", "Deployment", true, &["deploy"], true, true),
    r("apps", "v1", "statefulsets", "statefulset", "StatefulSet", true, &["sts"], true, true),
    r("batch", "v1", "jobs", "job", "Job", true, &[], true, true),
    r("rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole", "ClusterRole", false, &[], false, false),
    r("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", false, &[], false, false),
    r("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", true, &[], false, false),
    r("rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding", true, &[], false, false),
    r("storage.k8s.io", "v1", "storageclasses", "storageclass", "StorageClass", false, &["sc"], false, false),
    r("coordination.k8s.io", "v1", "leases", "lease", "Lease", true, &[], false, false),
    r("batch", "v1", "cronjobs", "cronjob", "CronJob", true, &["cj"], true, true),
    r("networking.k8s.io", "v1", "ingresses", "ingress", "Ingress", true, &["ing"], true, true),
    r("apiextensions.k8s.io", "v1", "customresourcedefinitions", "customresourcedefinition", "CustomResourceDefinition", false, &["crd", "crds"], true, true),
    r("", "v1", "nodes", "node", "Node", false, &["no"], true, false),
    r("networking.k8s.io", "v1", "ingressclasses", "ingressclass", "IngressClass", false, &[], false, false),
];

pub const NS: usize = 0;
pub const CM: usize = 1;
pub const SECRET: usize = 2;
pub const SVC: usize = 3;
pub const PVC: usize = 4;
pub const POD: usize = 6;
pub const EVENT: usize = 7;
pub const DEPLOY: usize = 8;
pub const STS: usize = 9;
pub const JOB: usize = 10;
pub const SC: usize = 15;
pub const CRD: usize = 19;
pub const NODE: usize = 20;

/// Resources defined by CustomResourceDefinitions, after the built-in ones: index
/// `RESOURCES.len() + i`. One registry for the process (a `Res` is `'static`, so each distinct
/// definition is leaked once); each server serves only the ones its own CRDs define
/// (`State::crds`).
static DEFINED: std::sync::RwLock<Vec<&'static Res>> = std::sync::RwLock::new(Vec::new());

/// The resource at an index: built in, or defined by a CRD.
pub fn res(i: usize) -> &'static Res {
    match i.checked_sub(RESOURCES.len()) {
        None => &RESOURCES[i],
        Some(d) => DEFINED.read().unwrap_or_else(|e| e.into_inner())[d],
    }
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

/// The index of the resource one served version of a CRD defines (registered on first use).
pub fn define(group: &str, version: &str, plural: &str, singular: &str, kind: &str, namespaced: bool, short: &[String], status: bool) -> usize {
    let mut defined = DEFINED.write().unwrap_or_else(|e| e.into_inner());
    let same = |r: &&Res| {
        r.group == group
            && r.version == version
            && r.plural == plural
            && r.singular == singular
            && r.kind == kind
            && r.namespaced == namespaced
            && r.status == status
            && r.short.iter().eq(short.iter())
    };
    if let Some(i) = defined.iter().position(same) {
        return RESOURCES.len() + i;
    }
    let short: Vec<&'static str> = short.iter().map(|s| leak(s)).collect();
    let r = r(leak(group), leak(version), leak(plural), leak(singular), leak(kind), namespaced, Box::leak(short.into_boxed_slice()), status, true);
    defined.push(Box::leak(Box::new(r)));
    RESOURCES.len() + defined.len() - 1
}

/// The resources a server serves: the built-in ones, then those its CRDs define.
pub fn served(crds: &std::collections::BTreeSet<usize>) -> Vec<(usize, &'static Res)> {
    (0..RESOURCES.len()).chain(crds.iter().copied()).map(|i| (i, res(i))).collect()
}

/// The resources one CRD object defines: (group, version, plural, singular, kind, namespaced,
/// short names, status subresource) per served version.
pub fn crd_versions(crd: &Value) -> Vec<usize> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or_default();
    let kind = names["kind"].as_str().unwrap_or_default();
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Vec::new();
    }
    let singular = names["singular"].as_str().filter(|s| !s.is_empty()).map(str::to_string).unwrap_or_else(|| kind.to_lowercase());
    let short: Vec<String> = names["shortNames"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect();
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .filter_map(|v| {
            let version = v["name"].as_str()?;
            let status = v.pointer("/subresources/status").is_some();
            Some(define(group, version, plural, &singular, kind, namespaced, &short, status))
        })
        .collect()
}

impl Res {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }
    /// `deployments.apps` / `configmaps`
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }
    /// `Deployment.apps` / `ConfigMap`
    pub fn group_kind(&self) -> String {
        if self.group.is_empty() { self.kind.to_string() } else { format!("{}.{}", self.kind, self.group) }
    }
    pub fn verbs(&self) -> Vec<&'static str> {
        vec!["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    }
}

/// A built-in resource, or one any server's CRD defined (for the test accessors).
pub fn find_res(api_version: &str, kind: &str) -> Option<usize> {
    RESOURCES.iter().position(|r| r.api_version() == api_version && r.kind == kind).or_else(|| {
        let defined = DEFINED.read().unwrap_or_else(|e| e.into_inner());
        defined.iter().position(|r| r.api_version() == api_version && r.kind == kind).map(|i| RESOURCES.len() + i)
    })
}

/// A resource this server serves, by its URL parts.
pub fn find_plural(crds: &std::collections::BTreeSet<usize>, group: &str, version: &str, plural: &str) -> Option<usize> {
    served(crds).into_iter().find(|(_, r)| r.group == group && r.version == version && r.plural == plural).map(|(i, _)| i)
}

fn set_default(m: &mut Value, key: &str, v: Value) {
    if let Some(o) = m.as_object_mut()
        && o.get(key).is_none_or(Value::is_null)
    {
        o.insert(key.to_string(), v);
    }
}

fn obj<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    let o = v.as_object_mut().expect("object");
    let e = o.entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
    if !e.is_object() {
        *e = Value::Object(Map::new());
    }
    e
}

pub fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        None => "Always",
        Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_container(c: &mut Value) {
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    let img = c.get("image").and_then(Value::as_str).unwrap_or("").to_string();
    set_default(c, "imagePullPolicy", json!(pull_policy(&img)));
    set_default(c, "resources", json!({}));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            set_default(p, "protocol", json!("TCP"));
        }
    }
    if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
        for e in env {
            if let Some(fr) = e.pointer_mut("/valueFrom/fieldRef") {
                set_default(fr, "apiVersion", json!("v1"));
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe) {
            set_default(p, "timeoutSeconds", json!(1));
            set_default(p, "periodSeconds", json!(10));
            set_default(p, "successThreshold", json!(1));
            set_default(p, "failureThreshold", json!(3));
            if let Some(h) = p.get_mut("httpGet") {
                set_default(h, "path", json!("/"));
                set_default(h, "scheme", json!("HTTP"));
            }
        }
    }
}

pub fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                default_container(c);
            }
        }
    }
    if let Some(vols) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in vols {
            for src in ["configMap", "secret"] {
                if let Some(s) = v.get_mut(src) {
                    set_default(s, "defaultMode", json!(420));
                }
            }
        }
    }
}

/// Fill in defaults like the real API server's defaulting functions.
pub fn apply_defaults(res: usize, o: &mut Value) {
    let kind = crate::resources::res(res).kind;
    match kind {
        "Namespace" => {
            let name = o.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
            let labels = obj(obj(o, "metadata"), "labels");
            set_default(labels, "kubernetes.io/metadata.name", name);
            set_default(obj(o, "spec"), "finalizers", json!(["kubernetes"]));
            set_default(obj(o, "status"), "phase", json!("Active"));
        }
        "Secret" => {
            set_default(o, "type", json!("Opaque"));
            if let Some(Value::Object(sd)) = o.as_object_mut().and_then(|m| m.remove("stringData")) {
                use base64::Engine;
                let data = obj(o, "data");
                for (k, v) in sd {
                    let s = v.as_str().unwrap_or("").to_string();
                    data[k] = json!(base64::engine::general_purpose::STANDARD.encode(s));
                }
            }
        }
        "Service" => {
            let spec = obj(o, "spec");
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            let ty = spec["type"].as_str().unwrap_or("").to_string();
            if ty != "ExternalName" {
                set_default(spec, "internalTrafficPolicy", json!("Cluster"));
                set_default(spec, "ipFamilies", json!(["IPv4"]));
                set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
            }
            if ty == "NodePort" || ty == "LoadBalancer" {
                set_default(spec, "externalTrafficPolicy", json!("Cluster"));
            }
            if ty == "LoadBalancer" {
                set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
            }
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    set_default(p, "protocol", json!("TCP"));
                    let port = p.get("port").cloned().unwrap_or(Value::Null);
                    set_default(p, "targetPort", port);
                }
            }
            set_default(obj(o, "status"), "loadBalancer", json!({}));
        }
        "PersistentVolumeClaim" => {
            set_default(obj(o, "spec"), "volumeMode", json!("Filesystem"));
        }
        "Ingress" => {
            set_default(obj(o, "status"), "loadBalancer", json!({}));
        }
        "Pod" => {
            let spec = obj(o, "spec");
            default_pod_spec(spec);
            set_default(spec, "enableServiceLinks", json!(true));
            set_default(spec, "priority", json!(0));
            set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
            set_default(spec, "serviceAccountName", json!("default"));
            let sa = spec["serviceAccountName"].clone();
            set_default(spec, "serviceAccount", sa);
            set_default(obj(o, "status"), "phase", json!("Pending"));
        }
        "Deployment" => {
            let spec = obj(o, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            let strat = obj(spec, "strategy");
            set_default(strat, "type", json!("RollingUpdate"));
            if strat["type"] == "RollingUpdate" {
                let ru = obj(strat, "rollingUpdate");
                set_default(ru, "maxUnavailable", json!("25%"));
                set_default(ru, "maxSurge", json!("25%"));
            }
            default_pod_spec(obj(obj(spec, "template"), "spec"));
        }
        "StatefulSet" => {
            let spec = obj(o, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            set_default(spec, "revisionHistoryLimit", json!(10));
            let us = obj(spec, "updateStrategy");
            set_default(us, "type", json!("RollingUpdate"));
            if us["type"] == "RollingUpdate" {
                set_default(obj(us, "rollingUpdate"), "partition", json!(0));
            }
            set_default(spec, "persistentVolumeClaimRetentionPolicy", json!({"whenDeleted": "Retain", "whenScaled": "Retain"}));
            if let Some(vcts) = spec.get_mut("volumeClaimTemplates").and_then(Value::as_array_mut) {
                for v in vcts {
                    set_default(v, "apiVersion", json!("v1"));
                    set_default(v, "kind", json!("PersistentVolumeClaim"));
                    set_default(obj(v, "spec"), "volumeMode", json!("Filesystem"));
                    set_default(obj(v, "status"), "phase", json!("Pending"));
                }
            }
            default_pod_spec(obj(obj(spec, "template"), "spec"));
        }
        "Job" => {
            let spec = obj(o, "spec");
            set_default(spec, "backoffLimit", json!(6));
            set_default(spec, "completions", json!(1));
            set_default(spec, "parallelism", json!(1));
            set_default(spec, "completionMode", json!("NonIndexed"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "manualSelector", Value::Null);
            if spec.get("manualSelector").is_some_and(Value::is_null) {
                spec.as_object_mut().unwrap().remove("manualSelector");
            }
            set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
            default_pod_spec(obj(obj(spec, "template"), "spec"));
        }
        "StorageClass" => {
            set_default(o, "reclaimPolicy", json!("Delete"));
            set_default(o, "volumeBindingMode", json!("Immediate"));
        }
        _ => {}
    }
}

/// Job selector / labels that the real server generates from the uid on create.
pub fn job_create_defaults(o: &mut Value) {
    let uid = o.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
    let name = o.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
    let spec = obj(o, "spec");
    if spec.get("selector").is_none() {
        spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
        let labels = obj(obj(obj(spec, "template"), "metadata"), "labels");
        set_default(labels, "batch.kubernetes.io/controller-uid", uid.clone());
        set_default(labels, "batch.kubernetes.io/job-name", name.clone());
        set_default(labels, "controller-uid", uid);
        set_default(labels, "job-name", name);
    }
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') && !s.starts_with('-') && !s.ends_with('-')
}

pub fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

/// (field, cause reason, message) list; empty = valid.
pub fn validate(res: usize, o: &Value) -> Vec<(String, &'static str, String)> {
    let mut errs = Vec::new();
    let name = o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    let kind = crate::resources::res(res).kind;
    if name.is_empty() {
        errs.push(("metadata.name".into(), "FieldValueRequired", "Required value: name or generateName is required".into()));
    } else {
        let (ok, msg) = match kind {
            "Namespace" => (is_label(name), LABEL_MSG),
            "Service" => (is_label(name) && name.as_bytes()[0].is_ascii_lowercase(), DNS1035_MSG),
            _ => (is_subdomain(name), SUBDOMAIN_MSG),
        };
        if !ok {
            errs.push(("metadata.name".into(), "FieldValueInvalid", format!("Invalid value: {}: {msg}", json!(name))));
        }
    }
    if let Some(Value::Object(labels)) = o.pointer("/metadata/labels") {
        for (k, v) in labels {
            let val = v.as_str().unwrap_or("");
            let ok = val.is_empty()
                || (val.len() <= 63
                    && val.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                    && val.as_bytes()[0].is_ascii_alphanumeric()
                    && val.as_bytes()[val.len() - 1].is_ascii_alphanumeric());
            if !ok {
                errs.push((
                    "metadata.labels".to_string(),
                    "FieldValueInvalid",
                    format!("Invalid value: {}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')", json!(val)),
                ));
            }
            let _ = k;
        }
    }
    let pod_spec = match kind {
        "Pod" => o.get("spec").map(|s| ("spec".to_string(), s)),
        "Deployment" | "StatefulSet" | "Job" => o.pointer("/spec/template/spec").map(|s| ("spec.template.spec".to_string(), s)),
        _ => None,
    };
    if matches!(kind, "Deployment" | "StatefulSet") {
        match o.pointer("/spec/selector") {
            None => errs.push(("spec.selector".into(), "FieldValueRequired", "Required value".into())),
            Some(sel) => {
                let tl = o.pointer("/spec/template/metadata/labels").cloned().unwrap_or(json!({}));
                let matches = sel.get("matchLabels").and_then(Value::as_object).is_none_or(|ml| ml.iter().all(|(k, v)| tl.get(k) == Some(v)));
                if !matches {
                    errs.push((
                        "spec.template.metadata.labels".into(),
                        "FieldValueInvalid",
                        format!("Invalid value: {}: `selector` does not match template `labels`", tl),
                    ));
                }
            }
        }
    }
    if let Some((prefix, spec)) = pod_spec {
        match spec.get("containers").and_then(Value::as_array) {
            Some(cs) if !cs.is_empty() => {
                for (i, c) in cs.iter().enumerate() {
                    if c.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
                        errs.push((format!("{prefix}.containers[{i}].name"), "FieldValueRequired", "Required value".into()));
                    }
                    if c.get("image").and_then(Value::as_str).is_none_or(str::is_empty) {
                        errs.push((format!("{prefix}.containers[{i}].image"), "FieldValueRequired", "Required value".into()));
                    }
                }
            }
            _ => errs.push((format!("{prefix}.containers"), "FieldValueRequired", "Required value".into())),
        }
        if kind == "Job" {
            let rp = spec.get("restartPolicy").and_then(Value::as_str).unwrap_or("Always");
            if rp != "Never" && rp != "OnFailure" {
                errs.push((
                    format!("{prefix}.restartPolicy"),
                    "FieldValueNotSupported",
                    format!("Unsupported value: {}: supported values: \"OnFailure\", \"Never\"", json!(rp)),
                ));
            }
        }
    }
    errs
}

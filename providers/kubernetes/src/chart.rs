//! Helm charts as components, the way Argo CD runs them: the real `helm template` renders the
//! chart, and from then on its objects are kdeploy's own (server-side apply as field manager
//! `kdeploy`, digests of the owned fields, drift, waits, pruning), with no Helm release in the
//! cluster.
//!
//! What a rendering depends on (the chart's source and version, the values, the release name
//! and namespace, a local chart's files) is recorded as `chart_digest`. While it is unchanged
//! the chart is not rendered again: a plan decides "no changes" without running helm or
//! reaching a chart repository, so a chart republished upstream under the same version shows
//! only when the version or the values change.
//!
//! This module decides (what to run, how to read its output, how kdeploy marks the objects); it
//! runs helm in [`template`] and does no API calls.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kdeploy_provider::{ErrorKind, ProviderError, Value};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::fields::digest;
use crate::render::{ADDRESS_ANNOTATION, MANAGED_BY};

/// The computed attribute that records the digest of the rendering's inputs.
pub const CHART_DIGEST: &str = "chart_digest";
/// Where the helm binary is, when not on PATH (see [`helm_binary`]).
pub const HELM_ENV: &str = "KDEPLOY_HELM";
/// What else to change when a chart renders a LoadBalancer Service that gets no address.
pub const BALANCER_FIX: &str = "change the chart's values that ask for a Service of type LoadBalancer (most charts take a service.type value)";
const CRD: (&str, &str) = ("apiextensions.k8s.io/v1", "CustomResourceDefinition");

/// What can go wrong with a chart, before any API call.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "{address}: helm was not found ({tried}). kdeploy renders charts with the real `helm template`: install helm 3 or later (https://helm.sh/docs/intro/install/, e.g. `brew install helm` or the official binary on PATH), or point KDEPLOY_HELM or the chart's `helm` attribute at it."
    )]
    HelmMissing { address: String, tried: String },
    #[error("{address}: `{command}` failed: {stderr}")]
    Helm { address: String, command: String, stderr: String },
    #[error("{address}: {what}: {source}")]
    Io {
        address: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{address}: helm printed something that is not Kubernetes objects: {message}")]
    Output { address: String, message: String },
}

impl From<ChartError> for ProviderError {
    fn from(e: ChartError) -> ProviderError {
        let kind = match e {
            ChartError::Invalid(_) | ChartError::HelmMissing { .. } | ChartError::Output { .. } => ErrorKind::Invalid,
            ChartError::Helm { .. } | ChartError::Io { .. } => ErrorKind::Other,
        };
        ProviderError::new(kind, e.to_string())
    }
}

/// Where the chart comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A chart repository: `helm template --repo URL CHART --version V`.
    Repository { url: String, chart: String, version: String },
    /// A chart directory or archive on this machine (an absolute path).
    Path(PathBuf),
}

/// One chart component, as `helm template` needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub address: String,
    pub source: Source,
    pub release: String,
    pub namespace: String,
    /// The values file (JSON is YAML).
    pub values: Json,
    /// The `helm` attribute.
    pub helm: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Objects kdeploy renders next to the chart's (Hub's seed Job): adopted like them, and
    /// part of the inputs digest.
    pub extra: Vec<Json>,
}

fn text(attrs: &BTreeMap<String, Value>, k: &str) -> Option<String> {
    attrs.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
}

impl Chart {
    /// The chart of a component's attributes (all known); `label` is the block label, the
    /// default release name.
    pub fn of(address: &str, label: &str, attrs: &BTreeMap<String, Value>) -> Result<Chart, ChartError> {
        let invalid = |m: String| ChartError::Invalid(format!("{address}: {m}"));
        let source = match (text(attrs, "repository"), text(attrs, "path")) {
            (Some(_), Some(_)) => return Err(invalid("set either repository (with chart and version) or path, not both".into())),
            (None, None) => return Err(invalid("set repository (with chart and version) or path (a chart directory or archive)".into())),
            (Some(url), None) => {
                let chart = text(attrs, "chart").ok_or_else(|| invalid("chart is required with repository: the chart's name in it".into()))?;
                let version = text(attrs, "version")
                    .ok_or_else(|| invalid("version is required with repository: an unpinned chart could change while the plan says \"No changes.\"".into()))?;
                Source::Repository { url, chart, version }
            }
            (None, Some(p)) => {
                let path = PathBuf::from(&p);
                if !path.is_absolute() {
                    return Err(invalid(format!(
                        "path {p:?} is relative, so it would depend on where kdeploy runs; write path = \"${{path.module}}/{p}\" (the stack's directory)"
                    )));
                }
                Source::Path(path)
            }
        };
        let values = match attrs.get("values") {
            None | Some(Value::Null) => json!({}),
            Some(v @ Value::Map(_)) => v.to_json(),
            Some(other) => return Err(invalid(format!("values must be an object (values = {{ key = ... }}), not a {}", other.type_name()))),
        };
        let labels = match attrs.get("labels") {
            Some(Value::Map(m)) => m.iter().map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.render_inline()))).collect(),
            _ => BTreeMap::new(),
        };
        Ok(Chart {
            address: address.to_string(),
            source,
            // Helm takes DNS names only (`chart "cert_manager"` is release cert-manager).
            release: text(attrs, "release").unwrap_or_else(|| release_name(label)),
            namespace: text(attrs, "namespace").unwrap_or_else(|| "default".into()),
            values,
            helm: text(attrs, "helm"),
            labels,
            extra: Vec::new(),
        })
    }

    /// The digest of everything the rendering depends on. A local chart's files are read (no
    /// helm, no network); a repository chart is identified by its URL, name and version.
    pub fn inputs_digest(&self) -> Result<String, ChartError> {
        let source = match &self.source {
            Source::Repository { url, chart, version } => json!({"repository": url, "chart": chart, "version": version}),
            Source::Path(p) => json!({"path": p.display().to_string(), "files": self.files_digest(p)?}),
        };
        let mut inputs = json!({"source": source, "release": self.release, "namespace": self.namespace, "values": self.values, "labels": self.labels});
        if !self.extra.is_empty() {
            inputs["extra"] = json!(self.extra);
        }
        Ok(digest(&inputs))
    }

    /// The digest of a local chart: every file's relative path and content, in name order.
    fn files_digest(&self, root: &Path) -> Result<String, ChartError> {
        let io = |what: String| move |source| ChartError::Io { address: self.address.clone(), what, source };
        let mut files = BTreeMap::new();
        let mut dirs = vec![root.to_path_buf()];
        if root.is_file() {
            let bytes = std::fs::read(root).map_err(io(format!("reading the chart archive {}", root.display())))?;
            return Ok(digest(&json!(bytes)));
        }
        while let Some(dir) = dirs.pop() {
            let entries = std::fs::read_dir(&dir).map_err(io(format!("reading the chart directory {}", dir.display())))?;
            for entry in entries {
                let path = entry.map_err(io(format!("reading the chart directory {}", dir.display())))?.path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let bytes = std::fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
                    let name = path.strip_prefix(root).unwrap_or(&path).display().to_string();
                    files.insert(name, digest(&json!(String::from_utf8_lossy(&bytes))));
                }
            }
        }
        Ok(digest(&json!(files)))
    }

    /// The arguments of `helm template` (values on stdin): CRDs included (kdeploy applies them
    /// first), hooks and tests left out (kdeploy does not run Helm's hooks).
    pub fn template_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec!["template".into(), self.release.clone()];
        match &self.source {
            Source::Repository { url, chart, version } => {
                args.extend([chart.clone(), "--repo".into(), url.clone(), "--version".into(), version.clone()]);
            }
            Source::Path(p) => args.push(p.display().to_string()),
        }
        args.extend(["--namespace", &self.namespace, "--include-crds", "--skip-tests", "--no-hooks", "--values", "-"].map(String::from));
        args
    }
}

/// The helm to run: the chart's `helm` attribute, else KDEPLOY_HELM, else `helm` on PATH.
pub fn helm_binary(chart: &Chart, env_helm: Option<String>, path_var: Option<std::ffi::OsString>) -> Result<PathBuf, ChartError> {
    let missing = |tried: String| ChartError::HelmMissing { address: chart.address.clone(), tried };
    if let Some(given) = chart.helm.clone().map(|h| (h, "the chart's helm attribute")).or(env_helm.filter(|h| !h.is_empty()).map(|h| (h, HELM_ENV))) {
        let (path, from) = given;
        return if Path::new(&path).is_file() { Ok(PathBuf::from(path)) } else { Err(missing(format!("{from} names {path}, which is not a file"))) };
    }
    let found = path_var.as_ref().and_then(|p| std::env::split_paths(p).map(|d| d.join("helm")).find(|c| c.is_file()));
    found.ok_or_else(|| missing("no helm on PATH".into()))
}

/// Runs `helm template` and returns what it printed.
pub fn template(helm: &Path, chart: &Chart) -> Result<String, ChartError> {
    use std::io::Write as _;
    let args = chart.template_args();
    let command = format!("{} {}", helm.display(), args.join(" "));
    let io = |what: &str| {
        let what = format!("{what} `{command}`");
        move |source| ChartError::Io { address: chart.address.clone(), what, source }
    };
    let mut child = std::process::Command::new(helm)
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(io("running"))?;
    let values = serde_json::to_vec(&chart.values).unwrap_or_default();
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&values).map_err(io("writing the values to"))?;
    }
    let out = child.wait_with_output().map_err(io("running"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(ChartError::Helm { address: chart.address.clone(), command, stderr });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The objects of `helm template`'s output (YAML documents; `kind: List` flattened, empty
/// documents skipped).
pub fn parse(address: &str, text: &str) -> Result<Vec<Json>, ChartError> {
    let bad = |message: String| ChartError::Output { address: address.to_string(), message };
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let obj = Json::deserialize(doc).map_err(|e| bad(e.to_string()))?;
        let items = match obj {
            Json::Null => continue,
            Json::Object(ref m) if m.get("kind").and_then(Json::as_str).is_some_and(|k| k.ends_with("List")) && m.contains_key("items") => {
                m["items"].as_array().cloned().unwrap_or_default()
            }
            other => vec![other],
        };
        for item in items {
            let (kind, name) = (item["kind"].as_str(), item["metadata"]["name"].as_str());
            if item["apiVersion"].as_str().is_none() || kind.is_none() || name.is_none() {
                return Err(bad(format!("a document without apiVersion, kind and metadata.name: {}", truncate(&item.to_string()))));
            }
            out.push(item);
        }
    }
    Ok(out)
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

/// Whether an object is a CustomResourceDefinition.
pub fn is_crd(obj: &Json) -> bool {
    obj["apiVersion"] == CRD.0 && obj["kind"] == CRD.1
}

/// (apiVersion, kind) → namespaced, for the kinds the chart's own CRDs define.
pub fn defined_kinds(objects: &[Json]) -> BTreeMap<(String, String), bool> {
    let mut out = BTreeMap::new();
    for crd in objects.iter().filter(|o| is_crd(o)) {
        let spec = &crd["spec"];
        let (Some(group), Some(kind)) = (spec["group"].as_str(), spec["names"]["kind"].as_str()) else { continue };
        for v in spec["versions"].as_array().into_iter().flatten() {
            if let Some(version) = v["name"].as_str() {
                out.insert((format!("{group}/{version}"), kind.to_string()), spec["scope"].as_str() != Some("Cluster"));
            }
        }
    }
    out
}

/// The release name Helm accepts for an instance name: its slug, at most 53 characters.
fn release_name(label: &str) -> String {
    let slug = kdeploy_provider::names::slug(label);
    let cut = slug.get(..53).unwrap_or(&slug).trim_end_matches('-');
    if cut.is_empty() { "release".to_string() } else { cut.to_string() }
}

/// Makes rendered objects kdeploy's: the release namespace on namespaced objects that name
/// none, kdeploy's ownership label (replacing Helm's, so reads find them) and the component's
/// address, the component's labels; CRDs first, then the rest in helm's install order.
/// `namespaced` tells the scope of a kind (None: unknown, an error).
pub fn adopt(chart: &Chart, objects: Vec<Json>, namespaced: impl Fn(&str, &str) -> Option<bool>) -> Result<Vec<Json>, ChartError> {
    let mut crds = Vec::new();
    let mut rest = Vec::new();
    for mut obj in objects {
        let (api_version, kind) = (obj["apiVersion"].as_str().unwrap_or_default().to_string(), obj["kind"].as_str().unwrap_or_default().to_string());
        let Some(scoped) = namespaced(&api_version, &kind) else {
            return Err(ChartError::Invalid(format!(
                "{}: the chart renders a {kind} ({api_version}), which the cluster does not serve and no CustomResourceDefinition of the chart defines; install the chart that defines it first (a chart component this one depends on)",
                chart.address
            )));
        };
        let meta = &mut obj["metadata"];
        if scoped && meta["namespace"].as_str().is_none_or(str::is_empty) {
            meta["namespace"] = json!(chart.namespace);
        } else if !scoped && let Some(m) = meta.as_object_mut() {
            m.remove("namespace");
        }
        for (k, v) in &chart.labels {
            meta["labels"][k] = json!(v);
        }
        meta["labels"][MANAGED_BY] = json!("kdeploy");
        meta["annotations"][ADDRESS_ANNOTATION] = json!(chart.address);
        if is_crd(&obj) { crds.push(obj) } else { rest.push(obj) }
    }
    crds.extend(rest);
    Ok(crds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn local() -> Chart {
        let values = Value::Map(attrs(&[("greeting", Value::string("hi"))]));
        Chart::of("chart.demo", "demo", &attrs(&[("path", Value::string("/charts/demo")), ("values", values)])).unwrap()
    }

    #[test]
    fn the_default_release_name_is_one_helm_accepts() {
        let path = attrs(&[("path", Value::string("/charts/x"))]);
        let release = |label: &str| Chart::of("chart.x", label, &path).unwrap().release;
        assert_eq!(release("demo"), "demo");
        assert_eq!(release("cert_manager"), "cert-manager");
        assert_eq!(release("Front Door"), "front-door");
        assert_eq!(release(&"a".repeat(60)).len(), 53);
        assert_eq!(release("__"), "release");
        let given = attrs(&[("path", Value::string("/charts/x")), ("release", Value::string("mine"))]);
        assert_eq!(Chart::of("chart.x", "cert_manager", &given).unwrap().release, "mine");
    }

    #[test]
    fn the_source_is_one_of_repository_or_path() {
        let repo = attrs(&[("repository", Value::string("https://charts.example.com")), ("chart", Value::string("x")), ("version", Value::string("1.2.3"))]);
        let c = Chart::of("chart.m", "m", &repo).unwrap();
        assert_eq!(c.template_args()[..7], ["template", "m", "x", "--repo", "https://charts.example.com", "--version", "1.2.3"]);
        assert!(c.template_args().ends_with(&["--include-crds", "--skip-tests", "--no-hooks", "--values", "-"].map(String::from)));
        let mut unpinned = repo.clone();
        unpinned.remove("version");
        assert!(Chart::of("chart.m", "m", &unpinned).unwrap_err().to_string().contains("version is required"));
        let relative = attrs(&[("path", Value::string("charts/x"))]);
        assert!(Chart::of("chart.m", "m", &relative).unwrap_err().to_string().contains("${path.module}/charts/x"));
        assert!(Chart::of("chart.m", "m", &BTreeMap::new()).is_err());
    }

    #[test]
    fn helm_is_found_in_order_and_its_absence_says_how_to_install_it() {
        let dir = std::env::temp_dir().join(format!("kdeploy-helm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("helm"), "").unwrap();
        let c = local();
        assert_eq!(helm_binary(&c, None, Some(dir.clone().into_os_string())).unwrap(), dir.join("helm"));
        let e = helm_binary(&c, None, Some("/nonexistent".into())).unwrap_err().to_string();
        assert!(e.contains("helm was not found (no helm on PATH)") && e.contains("https://helm.sh/docs/intro/install/"), "{e}");
        let e = helm_binary(&c, Some("/nowhere/helm".into()), Some(dir.clone().into_os_string())).unwrap_err().to_string();
        assert!(e.contains("KDEPLOY_HELM names /nowhere/helm"), "an explicit helm is not silently replaced: {e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn output_is_read_and_adopted_crds_first() {
        let text = "---\n# Source: demo/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels:\n    app.kubernetes.io/managed-by: Helm\n---\n\n---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: ws.d.io}\nspec: {group: d.io, scope: Namespaced, names: {kind: W, plural: ws}, versions: [{name: v1}]}\n---\napiVersion: d.io/v1\nkind: W\nmetadata: {name: w}\n";
        let objects = parse("chart.demo", text).unwrap();
        assert_eq!(objects.len(), 3);
        let defined = defined_kinds(&objects);
        let scope = |av: &str, k: &str| crate::api::resource(av, k).map(|(_, n)| n).or_else(|| defined.get(&(av.to_string(), k.to_string())).copied());
        let adopted = adopt(&local(), objects, scope).unwrap();
        assert_eq!(adopted.iter().map(|o| o["kind"].as_str().unwrap()).collect::<Vec<_>>(), ["CustomResourceDefinition", "ConfigMap", "W"]);
        assert!(adopted[0]["metadata"].get("namespace").is_none(), "cluster-scoped");
        assert_eq!(adopted[1]["metadata"]["namespace"], "default");
        assert_eq!(adopted[2]["metadata"]["namespace"], "default");
        assert_eq!(adopted[1]["metadata"]["labels"][MANAGED_BY], "kdeploy");
        assert_eq!(adopted[2]["metadata"]["annotations"][ADDRESS_ANNOTATION], "chart.demo");
        let unknown = parse("chart.demo", "apiVersion: x.io/v1\nkind: Thing\nmetadata: {name: t}\n").unwrap();
        assert!(adopt(&local(), unknown, |_, _| None).unwrap_err().to_string().contains("Thing (x.io/v1)"));
        assert!(parse("chart.demo", "just: text\n").is_err());
    }

    #[test]
    fn the_inputs_digest_follows_values_and_version() {
        let a = local();
        let mut b = local();
        b.values = json!({"greeting": "hello"});
        let (da, db) = (a.inputs_digest(), b.inputs_digest());
        // The directory does not exist: reading it is an error, not a silent digest.
        assert!(da.is_err() && db.is_err());
        let repo = |v: &str| {
            Chart::of(
                "chart.m",
                "m",
                &attrs(&[("repository", Value::string("https://c.example.com")), ("chart", Value::string("x")), ("version", Value::string(v))]),
            )
            .unwrap()
        };
        assert_eq!(repo("1.0.0").inputs_digest().unwrap(), repo("1.0.0").inputs_digest().unwrap());
        assert_ne!(repo("1.0.0").inputs_digest().unwrap(), repo("1.0.1").inputs_digest().unwrap());
    }
}

//! Taking over what already runs (`import` blocks, `kdeploy import`). The id is
//! `NAMESPACE/NAME` of the component's workload (its Deployment or StatefulSet). The component
//! then renders its objects under that name, keeps the workload's selector (immutable), and
//! compares each object it renders with the live one at the fields its server-side apply would
//! own: equal values are taken over without a change (no restart), other values are updates.

use std::collections::BTreeMap;

use kdeploy_provider::components::{self, Spec};
use kdeploy_provider::{ADOPTED, ErrorKind, ImportRequest, Imported, Kind, ProviderError, Value};
use serde_json::Value as Json;

use crate::api::{ApiError, Conn, path};
use crate::render::{namespace, object_key};
use crate::{DIGEST, FIELD_MANAGER, KubernetesProvider, OBJECTS, UNMANAGED, all_known, fields, fill_computed, map_of, map_ref};

/// The workload kinds an import id can name, in the order they are looked up.
const WORKLOADS: &[(&str, &str)] = &[("apps/v1", "Deployment"), ("apps/v1", "StatefulSet")];

/// `NAMESPACE/NAME`, or why not.
pub fn parse_id(id: &str) -> Result<(&str, &str), String> {
    match id.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Ok((ns, name)),
        _ => Err(format!(
            "{id:?} is not an import id of the Kubernetes provider, which takes NAMESPACE/NAME of the component's Deployment or StatefulSet (e.g. \"kerberos-vault/vault\")"
        )),
    }
}

impl KubernetesProvider {
    pub(crate) async fn import_existing(&self, req: ImportRequest<'_>) -> Result<Imported, ProviderError> {
        let c = &req.component;
        let invalid = |m: String| ProviderError::new(ErrorKind::Invalid, format!("{}: {m}", c.address));
        if c.kind == Kind::Cluster {
            return Err(invalid("a cluster is not imported: declare it, and import the components that run on it".into()));
        }
        if matches!(c.kind, Kind::Hub | Kind::Chart) {
            return Err(invalid(format!(
                "a {} is not imported yet: its objects come from a Helm chart; remove the import block and let kdeploy apply the chart over the release (or uninstall the release first)",
                c.kind
            )));
        }
        let (ns, name) = parse_id(req.id).map_err(invalid)?;
        let mut attrs = map_of(Some(req.desired));
        let declared = namespace(c, &attrs);
        if declared != ns {
            return Err(invalid(format!("the import id names namespace {ns:?}, but the component runs in {declared:?}; set namespace = {ns:?} in its block")));
        }
        let conn = self.conn(req.cluster).await?;
        let Some((kind, workload)) = find_workload(&conn, ns, name).await? else { return Ok(Imported::default()) };
        let selector = workload["spec"]["selector"]["matchLabels"].clone();
        let mut adopted = BTreeMap::from([("name".to_string(), Value::string(name)), ("selector".to_string(), Value::from_json(&selector))]);
        if let Some(service) = service_of(&conn, ns, &workload).await? {
            adopted.insert("service".into(), Value::String(service));
        }
        attrs.insert(ADOPTED.into(), Value::Map(adopted));
        let cluster = map_ref(req.cluster);
        keep_live_secrets(&conn, &req, &mut attrs, &workload, ns).await?;
        fill_computed(c, &mut attrs, req.refs, cluster, false)?;
        let objects = if all_known(c.kind, &attrs, req.refs) { self.rendered(c, &attrs, req.refs, cluster)? } else { None };
        let mut warnings = Vec::new();
        let (live, digest) = match objects {
            Some(objects) => {
                same_workload_kind(&objects, kind, name).map_err(invalid)?;
                (self.compare(&conn, &c.address.to_string(), &objects, req.force_conflicts, &mut warnings).await?, Some(fields::digest_all(&objects)))
            }
            // Until every value is known the objects are compared at apply (server-side apply
            // takes over what exists under the rendered names); none is recorded as found, so
            // that nothing found is ever deleted as "no longer rendered".
            None => (BTreeMap::new(), None),
        };
        // Known values only: what only apply can tell is planned, not found.
        attrs.retain(|_, v| !v.contains_unknown());
        attrs.insert(OBJECTS.into(), Value::Map(live));
        // The manifest the comparison was made with: the plan dry-runs nothing more when it is
        // the one it renders and the objects compared equal.
        if let Some(d) = digest {
            attrs.insert(DIGEST.into(), Value::String(d));
        }
        Ok(Imported { attributes: Some(Value::Map(attrs)), warnings })
    }

    /// The rendered objects that exist, each with the digest of its live values at the fields
    /// kdeploy's apply would own (a forced dry run tells which): the plan's dry run digests
    /// what the apply would write there, so equal values plan no change.
    async fn compare(
        &self,
        conn: &Conn,
        address: &str,
        objects: &[Json],
        force: bool,
        warnings: &mut Vec<String>,
    ) -> Result<BTreeMap<String, Value>, ProviderError> {
        let mut live = BTreeMap::new();
        for obj in objects {
            let key = object_key(obj);
            let ns = obj["metadata"]["namespace"].as_str();
            let p = path(obj["apiVersion"].as_str().unwrap_or_default(), obj["kind"].as_str().unwrap_or_default(), ns, obj["metadata"]["name"].as_str());
            let Some(existing) = conn.get(&p).await.map_err(|e| e.into_provider(&format!("reading {key}"), conn))? else { continue };
            let taken = match conn.apply(obj, true, force).await {
                Err(ApiError::Status { code: 409, message, .. }) => {
                    warnings.push(format!(
                        "{address}: {key}: other field managers own fields kdeploy would change ({message}); apply with --force-conflicts to take them over"
                    ));
                    conn.apply(obj, true, true).await
                }
                other => other,
            };
            let taken = taken.map_err(|e| e.into_provider(&format!("planning the takeover of {key}"), conn))?;
            let digest = fields::owned_fields(&taken, FIELD_MANAGER).map(|set| fields::digest_at(&existing, &set)).unwrap_or_else(|| UNMANAGED.into());
            live.insert(key, Value::String(digest));
        }
        Ok(live)
    }
}

/// The generated secrets (passwords, keys) the existing workload already uses, instead of
/// new ones: data and clients were set up with them. Read from the variable that carries each
/// in the live container (its value, or the Secret key it refers to).
async fn keep_live_secrets(conn: &Conn, req: &ImportRequest<'_>, attrs: &mut BTreeMap<String, Value>, workload: &Json, ns: &str) -> Result<(), ProviderError> {
    let (c, refs, cluster) = (&req.component, req.refs, map_ref(req.cluster));
    let mut filled = attrs.clone();
    fill_computed(c, &mut filled, refs, cluster, false)?;
    let (name, vars) = components::secret_variables(&Spec { component: c, attrs: &filled, refs, namespace: Some(ns) }, attrs);
    let containers = workload["spec"]["template"]["spec"]["containers"].as_array().cloned().unwrap_or_default();
    let Some(container) = containers.iter().find(|k| k["name"] == name).or(containers.first()) else { return Ok(()) };
    for (attr, var) in vars {
        if let Some(v) = live_env(conn, ns, container, &var).await? {
            attrs.insert(attr.to_string(), Value::String(v));
        }
    }
    Ok(())
}

/// The Service in front of the workload's pods (its selector matches their labels), by name:
/// the first in name order when there are several.
async fn service_of(conn: &Conn, ns: &str, workload: &Json) -> Result<Option<String>, ProviderError> {
    let labels = &workload["spec"]["template"]["metadata"]["labels"];
    let services = conn.list("v1", "Service", Some(ns), "").await.map_err(|e| e.into_provider(&format!("listing Services in {ns}"), conn))?;
    let mut names: Vec<String> = services
        .iter()
        .filter(|s| s["spec"]["selector"].as_object().is_some_and(|sel| !sel.is_empty() && sel.iter().all(|(k, v)| labels[k] == *v)))
        .filter_map(|s| s["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    Ok(names.into_iter().next())
}

/// The value of a container's variable: inline, or from the Secret key it names.
async fn live_env(conn: &Conn, ns: &str, container: &Json, name: &str) -> Result<Option<String>, ProviderError> {
    use base64::Engine as _;
    let Some(e) = container["env"].as_array().and_then(|env| env.iter().find(|e| e["name"] == name)) else { return Ok(None) };
    if let Some(v) = e["value"].as_str() {
        return Ok(Some(v.to_string()));
    }
    let r = &e["valueFrom"]["secretKeyRef"];
    let (Some(secret), Some(key)) = (r["name"].as_str(), r["key"].as_str()) else { return Ok(None) };
    let p = path("v1", "Secret", Some(ns), Some(secret));
    let found = conn.get(&p).await.map_err(|e| e.into_provider(&format!("reading Secret {ns}/{secret}"), conn))?;
    let data = found.as_ref().and_then(|s| s["data"][key].as_str()).and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok());
    Ok(data.and_then(|d| String::from_utf8(d).ok()))
}

/// The existing workload is of the kind kdeploy renders: a Deployment does not become a
/// StatefulSet in place, and kdeploy never replaces what it imports unless asked.
fn same_workload_kind(objects: &[Json], kind: &str, name: &str) -> Result<(), String> {
    let rendered = objects.iter().find(|o| WORKLOADS.iter().any(|(_, k)| o["kind"] == *k) && o["metadata"]["name"] == name);
    match rendered.and_then(|o| o["kind"].as_str()) {
        Some(k) if k != kind => Err(format!(
            "the existing workload is a {kind}, and kdeploy runs this component as a {k}: it cannot be taken over in place. Remove the import block to run it next to the existing one, then delete the old {kind} yourself (its volume claims are kept)"
        )),
        _ => Ok(()),
    }
}

/// The Deployment or StatefulSet `ns/name`, with its kind.
async fn find_workload(conn: &Conn, ns: &str, name: &str) -> Result<Option<(&'static str, Json)>, ProviderError> {
    for (api_version, kind) in WORKLOADS {
        let p = path(api_version, kind, Some(ns), Some(name));
        if let Some(obj) = conn.get(&p).await.map_err(|e| e.into_provider(&format!("reading {kind} {ns}/{name}"), conn))? {
            return Ok(Some((kind, obj)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::parse_id;

    #[test]
    fn ids_are_namespace_and_name() {
        assert_eq!(parse_id("kerberos-vault/vault"), Ok(("kerberos-vault", "vault")));
        for bad in ["vault", "/vault", "ns/", "a/b/c", ""] {
            assert!(parse_id(bad).is_err(), "{bad}");
        }
    }
}

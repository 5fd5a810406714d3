//! Server-side apply field ownership: the part of a live object that one field manager owns
//! (from `metadata.managedFields`, FieldsV1), and a stable digest of it. Comparing the digests
//! of what kdeploy owns — never the whole object — keeps defaults the API server fills in and
//! fields other controllers own out of every diff.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The FieldsV1 set that `manager` owns through `Apply` operations (merged over subresources).
pub fn owned_fields(obj: &Value, manager: &str) -> Option<Value> {
    let entries = obj.pointer("/metadata/managedFields")?.as_array()?;
    let mut merged: Option<Value> = None;
    for e in entries {
        if e.get("manager").and_then(Value::as_str) != Some(manager) || e.get("operation").and_then(Value::as_str) != Some("Apply") {
            continue;
        }
        if e.get("subresource").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
            continue;
        }
        if let Some(f) = e.get("fieldsV1") {
            merged = Some(match merged {
                None => f.clone(),
                Some(m) => merge_sets(&m, f),
            });
        }
    }
    merged
}

fn merge_sets(a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut out = x.clone();
            for (k, v) in y {
                let merged = match out.get(k) {
                    Some(old) => merge_sets(old, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (_, b) => b.clone(),
    }
}

/// The parts of `obj` selected by a FieldsV1 set.
pub fn project(obj: &Value, set: &Value) -> Value {
    let Some(fields) = set.as_object() else { return obj.clone() };
    let children: Vec<(&String, &Value)> = fields.iter().filter(|(k, _)| k.as_str() != ".").collect();
    if children.is_empty() {
        return obj.clone();
    }
    match obj {
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, sub) in children {
                if let Some(name) = k.strip_prefix("f:")
                    && let Some(v) = o.get(name)
                {
                    out.insert(name.to_string(), project(v, sub));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            let mut out = Vec::new();
            for (k, sub) in children {
                if let Some(keys) = k.strip_prefix("k:") {
                    let Ok(Value::Object(want)) = serde_json::from_str::<Value>(keys) else { continue };
                    if let Some(item) = items.iter().find(|i| want.iter().all(|(wk, wv)| i.get(wk).is_some_and(|iv| loose_eq(iv, wv)))) {
                        out.push(project(item, sub));
                    }
                } else if let Some(v) = k.strip_prefix("v:") {
                    if let Ok(want) = serde_json::from_str::<Value>(v)
                        && items.contains(&want)
                    {
                        out.push(want);
                    }
                } else if let Some(i) = k.strip_prefix("i:")
                    && let Some(item) = i.parse::<usize>().ok().and_then(|i| items.get(i))
                {
                    out.push(project(item, sub));
                }
            }
            Value::Array(out)
        }
        other => other.clone(),
    }
}

/// Keys in `k:` selectors are JSON; ports are numbers there and in the object.
fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// JSON with object keys sorted, so equal values always print the same.
pub fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                write_canonical(&o[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => write_list(a, out),
        other => {
            use std::fmt::Write as _;
            let _ = write!(out, "{other}");
        }
    }
}

fn write_list(a: &[Value], out: &mut String) {
    out.push('[');
    for (i, v) in a.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_canonical(v, out);
    }
    out.push(']');
}

fn digest_text(text: &str) -> String {
    let mut h = Sha256::new();
    h.update(text.as_bytes());
    let full = format!("{:x}", h.finalize());
    full[..16].to_string()
}

pub fn digest(v: &Value) -> String {
    digest_text(&canonical(v))
}

/// The digest of `values` as one JSON array (the same as [`digest`] of the array), without
/// building the array.
pub fn digest_all(values: &[Value]) -> String {
    let mut out = String::new();
    write_list(values, &mut out);
    digest_text(&out)
}

/// The digest of what `manager` owns in a live object (None when it owns nothing).
pub fn owned_digest(obj: &Value, manager: &str) -> Option<String> {
    let set = owned_fields(obj, manager)?;
    let mut projected = project(obj, &set);
    // Bookkeeping that changes on every write is never owned in a meaningful way.
    if let Some(meta) = projected.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
    }
    Some(digest(&projected))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(image: &str, replicas_owner: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "a", "namespace": "n", "resourceVersion": "7", "labels": {"app": "a"},
                "managedFields": [
                    {"manager": "kdeploy", "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"agent\"}": {".": {}, "f:name": {}, "f:image": {}}}}}}}},
                    {"manager": replicas_owner, "operation": "Update", "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
                    {"manager": "kdeploy", "operation": "Apply", "subresource": "status", "fieldsV1": {"f:status": {}}}
                ]},
            "spec": {"replicas": 3, "revisionHistoryLimit": 10, "template": {"spec": {"dnsPolicy": "ClusterFirst", "containers": [
                {"name": "agent", "image": image, "terminationMessagePath": "/dev/termination-log"}]}}},
            "status": {"readyReplicas": 1}
        })
    }

    #[test]
    fn projection_keeps_only_owned_fields() {
        let d = deployment("kerberos/agent:v1", "hpa");
        let set = owned_fields(&d, "kdeploy").unwrap();
        let p = project(&d, &set);
        assert_eq!(
            p,
            json!({"metadata": {"labels": {"app": "a"}}, "spec": {"template": {"spec": {"containers": [{"name": "agent", "image": "kerberos/agent:v1"}]}}}})
        );
    }

    #[test]
    fn defaults_and_other_managers_do_not_change_the_digest_but_owned_fields_do() {
        let a = owned_digest(&deployment("kerberos/agent:v1", "hpa"), "kdeploy").unwrap();
        let mut b = deployment("kerberos/agent:v1", "someone-else");
        b["spec"]["replicas"] = json!(5);
        b["spec"]["template"]["spec"]["dnsPolicy"] = json!("Default");
        b["metadata"]["resourceVersion"] = json!("99");
        assert_eq!(owned_digest(&b, "kdeploy").unwrap(), a);
        let c = owned_digest(&deployment("kerberos/agent:v2", "hpa"), "kdeploy").unwrap();
        assert_ne!(c, a);
        assert!(owned_digest(&deployment("x", "hpa"), "nobody").is_none());
    }

    #[test]
    fn canonical_json_ignores_key_order() {
        assert_eq!(canonical(&json!({"b": 1, "a": [ {"y": 1, "x": 2} ], "c\"": "é\n"})), r#"{"a":[{"x":2,"y":1}],"b":1,"c\"":"é\n"}"#);
        let objects = vec![json!({"b": 1}), json!("x")];
        assert_eq!(digest_all(&objects), digest(&Value::Array(objects.clone())));
        // Recorded digests stay valid: the text hashed has not changed.
        assert_eq!(digest(&json!({"b": [1, 2.5, null, true], "a": "x"})), "89e790eedaf1aca8");
    }
}

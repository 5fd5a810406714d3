//! Server-side apply field ownership: the part of a live object that one field manager owns
//! (from `metadata.managedFields`, FieldsV1), and a stable digest of it. Comparing the digests
//! of what kdeploy owns — never the whole object — keeps defaults the API server fills in and
//! fields other controllers own out of every diff.

use serde_json::{Map, Value};

use crate::node::{Shape, Tree};
use sha2::{Digest, Sha256};

/// The FieldsV1 set that `manager` owns through `Apply` operations (merged over subresources).
pub fn owned_fields(obj: &Value, manager: &str) -> Option<Value> {
    owned_sets(obj, manager).into_iter().cloned().reduce(|a, b| merge_sets(&a, &b))
}

/// The FieldsV1 sets of the `Apply` entries of `manager` (usually one; none for a subresource).
fn owned_sets<'a, T: Tree>(obj: &'a T, manager: &str) -> Vec<&'a T> {
    let Some(entries) = obj.pointer(&["metadata", "managedFields"]).and_then(T::items) else { return Vec::new() };
    entries
        .iter()
        .filter(|e| e.field("manager").and_then(T::as_str) == Some(manager) && e.field("operation").and_then(T::as_str) == Some("Apply"))
        .filter(|e| e.field("subresource").and_then(T::as_str).is_none_or(str::is_empty))
        .filter_map(|e| e.field("fieldsV1"))
        .collect()
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
                    if let Some(item) = items.iter().find(|i| want.iter().all(|(wk, wv)| i.get(wk).is_some_and(|iv| iv.loosely_equals(wv)))) {
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

/// JSON with object keys sorted, so equal values always print the same.
pub fn canonical(v: &Value) -> String {
    let mut out = Vec::new();
    write_canonical(v, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn write_canonical<T: Tree>(v: &T, out: &mut Vec<u8>) {
    match v.shape() {
        Shape::Object(mut entries) => {
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Shape::Array(a) => write_list(a, out),
        Shape::Scalar => v.write_scalar(out),
    }
}

fn write_list<T: Tree>(a: &[T], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, v) in a.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_canonical(v, out);
    }
    out.push(b']');
}

fn digest_text(text: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(text);
    let full = format!("{:x}", h.finalize());
    full[..16].to_string()
}

pub fn digest(v: &Value) -> String {
    let mut out = Vec::new();
    write_canonical(v, &mut out);
    digest_text(&out)
}

/// The digest of `values` as one JSON array (the same as [`digest`] of the array), without
/// building the array.
pub fn digest_all(values: &[Value]) -> String {
    let mut out = Vec::new();
    write_list(values, &mut out);
    digest_text(&out)
}

/// The digest of what `manager` owns in a live object (None when it owns nothing).
///
/// The same as the [`digest`] of the [`project`]ion without `metadata.resourceVersion` and
/// `metadata.managedFields` (bookkeeping that changes on every write is never owned in a
/// meaningful way), written straight from the object: a plan digests every object it lists.
pub fn owned_digest<T: Tree>(obj: &T, manager: &str) -> Option<String> {
    let mut out = Vec::new();
    match owned_sets(obj, manager).as_slice() {
        [] => return None,
        [set] => write_projected(obj, Some(*set), Level::Top, &mut out),
        // Several entries (rare): their union, over the object as a value.
        sets => {
            let merged = sets.iter().map(|s| s.to_value()).reduce(|a, b| merge_sets(&a, &b));
            write_projected(&obj.to_value(), merged.as_ref(), Level::Top, &mut out);
        }
    }
    Some(digest_text(&out))
}

/// The digest of what `set` selects of `obj`, computed as [`owned_digest`] does: an import
/// compares the live object's values at the fields kdeploy's apply would own with what the
/// apply would write there.
pub fn digest_at(obj: &Value, set: &Value) -> String {
    let mut out = Vec::new();
    write_projected(obj, Some(set), Level::Top, &mut out);
    digest_text(&out)
}

/// Where [`write_projected`] is: the object, its metadata (whose bookkeeping is left out), or
/// below.
#[derive(Clone, Copy, PartialEq)]
enum Level {
    Top,
    Metadata,
    Inner,
}

/// The canonical text of `project(obj, set)` (`set` None: all of `obj`), without the
/// bookkeeping of the top-level metadata.
fn write_projected<O: Tree, S: Tree>(obj: &O, set: Option<&S>, level: Level, out: &mut Vec<u8>) {
    let children: Vec<(&str, &S)> = match set.map(S::shape) {
        Some(Shape::Object(fields)) => fields.into_iter().filter(|(k, _)| *k != ".").collect(),
        _ => Vec::new(),
    };
    let below = |name: &str| if level == Level::Top && name == "metadata" { Level::Metadata } else { Level::Inner };
    match obj.shape() {
        Shape::Object(_) if children.is_empty() && level == Level::Inner => write_canonical(obj, out),
        Shape::Object(o) if children.is_empty() => {
            let entries: Vec<(&str, &O, Option<&S>)> = o.into_iter().map(|(k, v)| (k, v, None)).collect();
            write_entries(entries, level, below, out);
        }
        Shape::Object(o) => {
            let entries: Vec<(&str, &O, Option<&S>)> = children
                .iter()
                .filter_map(|(k, sub)| k.strip_prefix("f:").and_then(|name| o.iter().find(|(n, _)| *n == name)).map(|(name, v)| (*name, *v, Some(*sub))))
                .collect();
            write_entries(entries, level, below, out);
        }
        Shape::Array(items) if !children.is_empty() => write_projected_items(items, &children, out),
        _ => write_canonical(obj, out),
    }
}

/// The items of a list that a set selects (`k:` by key fields, `v:` by value, `i:` by index).
fn write_projected_items<O: Tree, S: Tree>(items: &[O], children: &[(&str, &S)], out: &mut Vec<u8>) {
    out.push(b'[');
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    for (k, sub) in children {
        if let Some(keys) = k.strip_prefix("k:") {
            let Ok(Value::Object(want)) = serde_json::from_str::<Value>(keys) else { continue };
            if let Some(item) = items.iter().find(|i| want.iter().all(|(wk, wv)| i.field(wk).is_some_and(|iv| iv.loosely_equals(wv)))) {
                sep(out);
                write_projected(item, Some(*sub), Level::Inner, out);
            }
        } else if let Some(v) = k.strip_prefix("v:") {
            if let Ok(want) = serde_json::from_str::<Value>(v)
                && items.iter().any(|i| i.equals(&want))
            {
                sep(out);
                write_canonical(&want, out);
            }
        } else if let Some(i) = k.strip_prefix("i:")
            && let Some(item) = i.parse::<usize>().ok().and_then(|i| items.get(i))
        {
            sep(out);
            write_projected(item, Some(*sub), Level::Inner, out);
        }
    }
    out.push(b']');
}

/// An object's entries, sorted by key, each projected by its set; the top-level metadata's
/// bookkeeping left out.
fn write_entries<O: Tree, S: Tree>(mut entries: Vec<(&str, &O, Option<&S>)>, level: Level, below: impl Fn(&str) -> Level, out: &mut Vec<u8>) {
    if level == Level::Metadata {
        entries.retain(|(k, _, _)| *k != "resourceVersion" && *k != "managedFields");
    }
    entries.sort_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (k, v, sub)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, k);
        out.push(b':');
        write_projected(v, sub, below(k), out);
    }
    out.push(b'}');
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

    /// What owned_digest computed before it wrote the projection straight from the object.
    fn digest_of_projection(obj: &Value, manager: &str) -> Option<String> {
        let set = owned_fields(obj, manager)?;
        let mut projected = project(obj, &set);
        if let Some(meta) = projected.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
            meta.remove("managedFields");
        }
        Some(digest(&projected))
    }

    #[test]
    fn owned_digest_is_the_digest_of_the_projection() {
        let mut objects = vec![deployment("kerberos/agent:v1", "hpa"), deployment("x", "kdeploy")];
        // The whole metadata owned, a set entry for a list item by value and by index, a
        // selector that matches nothing, and a second Apply entry to merge.
        let mut d = deployment("y", "hpa");
        d["metadata"]["managedFields"][0]["fieldsV1"]["f:metadata"] = json!({});
        d["spec"]["finalizers"] = json!(["a", "b"]);
        d["metadata"]["managedFields"].as_array_mut().unwrap().push(json!({"manager": "kdeploy", "operation": "Apply",
            "fieldsV1": {"f:spec": {"f:finalizers": {"v:\"b\"": {}, "v:\"zz\"": {}}, "f:template": {"f:spec": {"f:containers": {"i:0": {"f:name": {}}, "k:{\"name\":\"none\"}": {}}}}}}}));
        objects.push(d);
        let mut whole = deployment("z", "hpa");
        whole["metadata"]["managedFields"][0]["fieldsV1"] = json!({".": {}});
        objects.push(whole);
        // One entry selecting list items by value and by key fields, a number written as a float
        // in the selector, and a key with escapes.
        let mut one = deployment("p", "hpa");
        one["spec"]["finalizers"] = json!(["a", "b"]);
        one["spec"]["template"]["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 81}]);
        one["metadata"]["labels"]["quote\"d"] = json!("x\ny");
        let set = &mut one["metadata"]["managedFields"][0]["fieldsV1"];
        set["f:spec"]["f:finalizers"] = json!({"v:\"b\"": {}});
        set["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"agent\"}"]["f:ports"] =
            json!({"k:{\"containerPort\":80.0,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}});
        set["f:metadata"]["f:labels"]["f:quote\"d"] = json!({});
        objects.push(one);
        for o in &objects {
            let expected = digest_of_projection(o, "kdeploy");
            assert_eq!(owned_digest(o, "kdeploy"), expected, "{o}");
            // The same object as a LIST item, decoded borrowed: the same digest.
            let text = o.to_string();
            assert_eq!(owned_digest(&crate::node::Node::parse(&text).unwrap(), "kdeploy"), expected, "{o}");
        }
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

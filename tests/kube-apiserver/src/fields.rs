//! Field sets (managedFields `FieldsV1`), JSON merge patch, strategic merge
//! patch and the server-side-apply merge, all on `serde_json::Value`.
//!
//! A path is a list of encoded path elements exactly as they appear in
//! `FieldsV1`: `f:name` (field), `k:{"name":"x"}` (associative list entry),
//! `v:"x"` (set list entry), `i:0` (index).

use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

pub type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

pub enum ListKind {
    Keyed(&'static [&'static str]),
    Set,
    Atomic,
}

/// How the list stored under field `name` (whose parent is at `parent`) merges.
pub fn list_kind(name: &str, parent: &[String]) -> ListKind {
    match name {
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes" | "imagePullSecrets" => ListKind::Keyed(&["name"]),
        "ports" => {
            if parent.last().is_some_and(|p| p.starts_with("k:")) {
                ListKind::Keyed(&["containerPort", "protocol"])
            } else {
                ListKind::Keyed(&["port", "protocol"])
            }
        }
        "volumeMounts" => ListKind::Keyed(&["mountPath"]),
        "volumeDevices" => ListKind::Keyed(&["devicePath"]),
        "ownerReferences" => ListKind::Keyed(&["uid"]),
        "conditions" => ListKind::Keyed(&["type"]),
        "hostAliases" => ListKind::Keyed(&["ip"]),
        "topologySpreadConstraints" => ListKind::Keyed(&["topologyKey", "whenUnsatisfiable"]),
        "finalizers" if parent.len() == 1 && parent[0] == "f:metadata" => ListKind::Set,
        _ => ListKind::Atomic,
    }
}

fn key_value(item: &Value, key: &str) -> Value {
    match item.get(key) {
        Some(v) => v.clone(),
        None if key == "protocol" => Value::String("TCP".into()),
        None => Value::Null,
    }
}

/// `k:{...}` element for a keyed list item (keys sorted, protocol defaulted).
pub fn item_key(item: &Value, keys: &[&str]) -> String {
    let mut ks: Vec<&str> = keys.to_vec();
    ks.sort();
    let mut m = Map::new();
    for k in ks {
        let v = key_value(item, k);
        if !v.is_null() {
            m.insert(k.to_string(), v);
        }
    }
    format!("k:{}", Value::Object(m))
}

fn item_matches(item: &Value, elem: &str) -> bool {
    let Ok(Value::Object(want)) = serde_json::from_str::<Value>(&elem[2..]) else {
        return false;
    };
    want.iter().all(|(k, v)| &key_value(item, k) == v)
}

/// Collect the field set of `v` (rooted at `path`) into `out`.
pub fn field_set(v: &Value, path: &mut Path, out: &mut FieldSet) {
    let Value::Object(m) = v else {
        out.insert(path.clone());
        return;
    };
    if m.is_empty() {
        out.insert(path.clone());
        return;
    }
    for (k, child) in m {
        let parent = path.clone();
        path.push(format!("f:{k}"));
        match child {
            Value::Object(cm) if !cm.is_empty() => field_set(child, path, out),
            Value::Array(items) => match list_kind(k, &parent) {
                ListKind::Keyed(keys) if items.iter().all(|i| i.is_object()) => {
                    for item in items {
                        path.push(item_key(item, keys));
                        out.insert(path.clone());
                        field_set(item, path, out);
                        path.pop();
                    }
                }
                ListKind::Set => {
                    for item in items {
                        path.push(format!("v:{item}"));
                        out.insert(path.clone());
                        path.pop();
                    }
                }
                _ => {
                    out.insert(path.clone());
                }
            },
            _ => {
                out.insert(path.clone());
            }
        }
        path.pop();
    }
}

pub fn field_set_of(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    if v.as_object().is_some_and(|m| !m.is_empty()) {
        field_set(v, &mut Vec::new(), &mut out);
    }
    out
}

#[derive(Default)]
struct Node {
    member: bool,
    children: BTreeMap<String, Node>,
}

pub fn to_fields_v1(fs: &FieldSet) -> Value {
    let mut root = Node::default();
    for p in fs {
        let mut n = &mut root;
        for e in p {
            n = n.children.entry(e.clone()).or_default();
        }
        n.member = true;
    }
    fn conv(n: &Node) -> Value {
        let mut m = Map::new();
        if n.member && !n.children.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (k, c) in &n.children {
            m.insert(k.clone(), conv(c));
        }
        Value::Object(m)
    }
    conv(&root)
}

pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn walk(v: &Value, p: &mut Path, out: &mut FieldSet) {
        if let Value::Object(m) = v {
            for (k, c) in m {
                if k == "." {
                    out.insert(p.clone());
                    continue;
                }
                p.push(k.clone());
                if c.as_object().is_some_and(|o| o.is_empty()) {
                    out.insert(p.clone());
                } else {
                    walk(c, p, out);
                }
                p.pop();
            }
        }
    }
    let mut out = FieldSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

pub fn get_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for e in path {
        cur = step(cur, e)?;
    }
    Some(cur)
}

fn step<'a>(cur: &'a Value, e: &str) -> Option<&'a Value> {
    if let Some(f) = e.strip_prefix("f:") {
        cur.get(f)
    } else if e.starts_with("k:") {
        cur.as_array()?.iter().find(|i| item_matches(i, e))
    } else if let Some(j) = e.strip_prefix("v:") {
        let want: Value = serde_json::from_str(j).ok()?;
        cur.as_array()?.iter().find(|i| **i == want)
    } else if let Some(i) = e.strip_prefix("i:") {
        cur.as_array()?.get(i.parse::<usize>().ok()?)
    } else {
        None
    }
}

fn step_mut<'a>(cur: &'a mut Value, e: &str) -> Option<&'a mut Value> {
    if let Some(f) = e.strip_prefix("f:") {
        cur.get_mut(f)
    } else if e.starts_with("k:") {
        cur.as_array_mut()?.iter_mut().find(|i| item_matches(i, e))
    } else if let Some(j) = e.strip_prefix("v:") {
        let want: Value = serde_json::from_str(j).ok()?;
        cur.as_array_mut()?.iter_mut().find(|i| **i == want)
    } else if let Some(i) = e.strip_prefix("i:") {
        cur.as_array_mut()?.get_mut(i.parse::<usize>().ok()?)
    } else {
        None
    }
}

pub fn remove_at(v: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else { return };
    let mut cur = v;
    for e in parent {
        match step_mut(cur, e) {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if last.starts_with("k:") {
        if let Some(a) = cur.as_array_mut() {
            a.retain(|i| !item_matches(i, last));
        }
    } else if let Some(j) = last.strip_prefix("v:")
        && let (Ok(want), Some(a)) = (serde_json::from_str::<Value>(j), cur.as_array_mut())
    {
        a.retain(|i| *i != want);
    }
}

/// `.spec.template.spec.containers[name="nginx"].image` (fieldpath.Path.String()).
pub fn path_string(path: &[String]) -> String {
    let mut s = String::new();
    for e in path {
        if let Some(f) = e.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = e.strip_prefix("k:") {
            let m: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = e.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        } else if let Some(i) = e.strip_prefix("i:") {
            s.push_str(&format!("[{i}]"));
        }
    }
    s
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    if let Value::Object(pm) = patch {
        if !target.is_object() {
            *target = Value::Object(Map::new());
        }
        let tm = target.as_object_mut().unwrap();
        for (k, pv) in pm {
            if pv.is_null() {
                tm.remove(k);
            } else {
                let e = tm.entry(k.clone()).or_insert(Value::Null);
                merge_patch(e, pv);
            }
        }
    } else {
        *target = patch.clone();
    }
}

/// Strategic merge patch: JSON merge patch, except that lists with a merge
/// key (see [`list_kind`]) are merged item by item by that key, items may
/// carry `$patch: delete`, and `$setElementOrder/…`, `$retainKeys`,
/// `$deleteFromPrimitiveList/…` directives are accepted (ignored).
pub fn strategic_merge(target: &mut Value, patch: &Value, path: &mut Path) {
    let Value::Object(pm) = patch else {
        *target = patch.clone();
        return;
    };
    if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = patch.clone();
        p.as_object_mut().unwrap().remove("$patch");
        *target = p;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    for (k, pv) in pm {
        if k.starts_with('$') {
            continue;
        }
        let parent = path.clone();
        let tm = target.as_object_mut().unwrap();
        if pv.is_null() {
            tm.remove(k);
            continue;
        }
        path.push(format!("f:{k}"));
        match (pv, list_kind(k, &parent)) {
            (Value::Array(items), ListKind::Keyed(keys)) if items.iter().all(Value::is_object) => {
                let cur = tm.entry(k.clone()).or_insert(Value::Array(vec![]));
                if !cur.is_array() {
                    *cur = Value::Array(vec![]);
                }
                let arr = cur.as_array_mut().unwrap();
                // strategic merge keys on the primary key only
                let pk = [keys[0]];
                for item in items {
                    let key = item_key(item, &pk);
                    let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                    let pos = arr.iter().position(|i| item_matches(i, &key));
                    match (pos, delete) {
                        (Some(p), true) => {
                            arr.remove(p);
                        }
                        (None, true) => {}
                        (Some(p), false) => {
                            path.push(key.clone());
                            strategic_merge(&mut arr[p], item, path);
                            path.pop();
                        }
                        (None, false) => {
                            let mut n = Value::Object(Map::new());
                            path.push(key.clone());
                            strategic_merge(&mut n, item, path);
                            path.pop();
                            arr.push(n);
                        }
                    }
                }
            }
            (Value::Object(_), _) => {
                let e = tm.entry(k.clone()).or_insert(Value::Null);
                strategic_merge(e, pv, path);
            }
            _ => {
                tm.insert(k.clone(), pv.clone());
            }
        }
        path.pop();
    }
}

/// Merge an applied configuration into the live object (server-side apply).
pub fn apply_merge(live: &mut Value, applied: &Value, path: &mut Path) {
    let (Value::Object(_), Value::Object(am)) = (&*live, applied) else {
        *live = applied.clone();
        return;
    };
    for (k, av) in am {
        let parent = path.clone();
        let lm = live.as_object_mut().unwrap();
        path.push(format!("f:{k}"));
        match (av, list_kind(k, &parent)) {
            (Value::Array(items), ListKind::Keyed(keys)) if items.iter().all(Value::is_object) => {
                let cur = lm.entry(k.clone()).or_insert(Value::Array(vec![]));
                if !cur.is_array() {
                    *cur = Value::Array(vec![]);
                }
                let arr = cur.as_array_mut().unwrap();
                for item in items {
                    let key = item_key(item, keys);
                    match arr.iter().position(|i| item_matches(i, &key)) {
                        Some(p) => {
                            path.push(key);
                            apply_merge(&mut arr[p], item, path);
                            path.pop();
                        }
                        None => arr.push(item.clone()),
                    }
                }
            }
            (Value::Array(items), ListKind::Set) => {
                let cur = lm.entry(k.clone()).or_insert(Value::Array(vec![]));
                if let Some(arr) = cur.as_array_mut() {
                    for i in items {
                        if !arr.contains(i) {
                            arr.push(i.clone());
                        }
                    }
                }
            }
            (Value::Object(o), _) if !o.is_empty() => match lm.get_mut(k) {
                Some(lv) if lv.is_object() => apply_merge(lv, av, path),
                _ => {
                    lm.insert(k.clone(), av.clone());
                }
            },
            _ => {
                lm.insert(k.clone(), av.clone());
            }
        }
        path.pop();
    }
}

/// RFC 6902 JSON patch (add, remove, replace, test, copy, move).
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("json patch must be an array")?;
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).ok_or("missing op")?;
        let p = op.get("path").and_then(Value::as_str).ok_or("missing path")?;
        match kind {
            "add" | "replace" => {
                let v = op.get("value").cloned().ok_or("missing value")?;
                pointer_set(doc, p, v, kind == "add")?;
            }
            "remove" => {
                pointer_remove(doc, p)?;
            }
            "test" => {
                if doc.pointer(p) != op.get("value") {
                    return Err(format!("testing value {p} failed"));
                }
            }
            "copy" | "move" => {
                let from = op.get("from").and_then(Value::as_str).ok_or("missing from")?;
                let v = doc.pointer(from).cloned().ok_or("from path not found")?;
                if kind == "move" {
                    pointer_remove(doc, from)?;
                }
                pointer_set(doc, p, v, true)?;
            }
            _ => return Err(format!("unknown op {kind}")),
        }
    }
    Ok(())
}

fn split_pointer(p: &str) -> Result<(String, String), String> {
    let i = p.rfind('/').ok_or("invalid path")?;
    let last = p[i + 1..].replace("~1", "/").replace("~0", "~");
    Ok((p[..i].to_string(), last))
}

fn pointer_set(doc: &mut Value, p: &str, v: Value, add: bool) -> Result<(), String> {
    if p.is_empty() {
        *doc = v;
        return Ok(());
    }
    let (parent, last) = split_pointer(p)?;
    let target = doc.pointer_mut(&parent).ok_or_else(|| format!("path {parent} not found"))?;
    match target {
        Value::Object(m) => {
            if !add && !m.contains_key(&last) {
                return Err(format!("replace operation does not apply: doc is missing key: {p}"));
            }
            m.insert(last, v);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(v);
            } else {
                let i: usize = last.parse().map_err(|_| "bad index")?;
                if add {
                    if i > a.len() {
                        return Err("index out of range".into());
                    }
                    a.insert(i, v);
                } else {
                    *a.get_mut(i).ok_or("index out of range")? = v;
                }
            }
        }
        _ => return Err(format!("path {parent} is not a container")),
    }
    Ok(())
}

fn pointer_remove(doc: &mut Value, p: &str) -> Result<(), String> {
    let (parent, last) = split_pointer(p)?;
    let target = doc.pointer_mut(&parent).ok_or_else(|| format!("path {parent} not found"))?;
    match target {
        Value::Object(m) => {
            m.remove(&last).ok_or_else(|| format!("remove operation does not apply: doc is missing path: {p}"))?;
        }
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| "bad index")?;
            if i >= a.len() {
                return Err("index out of range".into());
            }
            a.remove(i);
        }
        _ => return Err("not a container".into()),
    }
    Ok(())
}

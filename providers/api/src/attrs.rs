//! Attribute access on a component's [`Value`] map, shared by the cloud providers: typed
//! getters, and the planning helpers every provider's `plan` needs (keep a computed value,
//! compare inputs, list the ones forcing replacement).

use std::collections::BTreeMap;

use crate::value::{AttrPath, Value};

pub type Attrs = BTreeMap<String, Value>;

/// The attributes of a value (empty unless it is a map).
pub fn attrs(v: Option<&Value>) -> Attrs {
    v.and_then(Value::as_map).cloned().unwrap_or_default()
}

/// A known, non-empty string attribute.
pub fn s(m: &Attrs, k: &str) -> Option<String> {
    m.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
}

pub fn n(m: &Attrs, k: &str) -> Option<i64> {
    m.get(k).and_then(Value::as_i64)
}

pub fn b(m: &Attrs, k: &str) -> Option<bool> {
    m.get(k).and_then(Value::as_bool)
}

/// A known list of strings (None when null, unknown or not a list of strings).
pub fn list(m: &Attrs, k: &str) -> Option<Vec<String>> {
    m.get(k).and_then(Value::as_list).and_then(|l| l.iter().map(|v| v.as_str().map(str::to_string)).collect())
}

/// The user's tags (a map of strings); empty when unset.
pub fn tag_map(m: &Attrs, k: &str) -> BTreeMap<String, String> {
    m.get(k).and_then(Value::as_map).map(|t| t.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))).collect()).unwrap_or_default()
}

/// `address.attr`, not known until apply.
pub fn unknown(address: &str, attr: &str) -> Value {
    Value::Unknown(format!("{address}.{attr}"))
}

/// The prior value of a computed attribute when known, else unknown.
pub fn keep(prior: Option<&Attrs>, address: &str, attr: &str) -> Value {
    match prior.and_then(|p| p.get(attr)) {
        Some(v) if !v.is_null() && !v.contains_unknown() => v.clone(),
        _ => unknown(address, attr),
    }
}

/// Two attribute values are equal (numbers by value, null == missing).
pub fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    let norm = |v: Option<&Value>| match v {
        None | Some(Value::Null) => serde_json::Value::Null,
        Some(Value::Unknown(o)) => serde_json::json!({"unknown": o}),
        Some(v) => v.to_json(),
    };
    let (x, y) = (norm(a), norm(b));
    match (x.as_f64(), y.as_f64()) {
        (Some(p), Some(q)) => p == q,
        _ => x == y,
    }
}

/// Which of `names` differ between prior and planned (nothing on create).
pub fn replaced(prior: Option<&Attrs>, planned: &Attrs, names: &[&str]) -> Vec<AttrPath> {
    let Some(prior) = prior else { return Vec::new() };
    names.iter().filter(|k| !same(prior.get(**k), planned.get(**k))).map(|k| AttrPath::attr(k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getters_and_plan_helpers() {
        let m: Attrs = [("a", Value::string("x")), ("e", Value::string("")), ("c", Value::from_i64(2)), ("u", Value::Unknown("o".into()))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(s(&m, "a").as_deref(), Some("x"));
        assert_eq!(s(&m, "e"), None, "empty strings count as unset");
        assert_eq!(n(&m, "c"), Some(2));
        assert_eq!(keep(Some(&m), "x.y", "c"), Value::from_i64(2));
        assert_eq!(keep(Some(&m), "x.y", "u"), Value::Unknown("x.y.u".into()));
        assert!(same(None, Some(&Value::Null)));
        assert!(same(Some(&Value::from_i64(2)), Some(&Value::from_f64(2.0))));
        let mut planned = m.clone();
        planned.insert("a".into(), Value::string("z"));
        assert_eq!(replaced(Some(&m), &planned, &["a", "c"]), vec![AttrPath::attr("a")]);
        assert!(replaced(None, &planned, &["a"]).is_empty());
    }
}

//! The value model shared by the language, the planner, the state and the providers.
//!
//! A [`Value`] is plain data: JSON-like, plus [`Value::Unknown`] for values that are only known
//! after apply (an endpoint, a generated id). Sensitivity is not a property of a value; it is kept
//! beside it as a set of [`AttrPath`]s so that every renderer can redact by path.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A dynamically typed value.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
    /// Known only after apply. The string says where it comes from (an expression or an
    /// attribute such as `vault.main.endpoint`), for `(known after apply)` rendering.
    Unknown(String),
}

impl Value {
    /// Value equality, the one used everywhere (expressions, plans, drift): numbers compare by
    /// value (`1` equals `1.0`; integers exactly, beyond what a float holds), collections
    /// element by element.
    pub fn same_as(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
                (Some(a), Some(b)) => a == b,
                _ => x.as_f64() == y.as_f64(),
            },
            (Value::List(x), Value::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| a.same_as(b)),
            (Value::Map(x), Value::Map(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| v.same_as(w))),
            _ => self == other,
        }
    }

    pub fn string(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }

    pub fn from_i64(n: i64) -> Value {
        Value::Number(n.into())
    }

    /// A number from an f64; integral values are kept as integers so that `3` prints as `3`.
    pub fn from_f64(n: f64) -> Value {
        if n.fract() == 0.0 && n.abs() < 9.0e15 {
            Value::Number((n as i64).into())
        } else {
            serde_json::Number::from_f64(n).map(Value::Number).unwrap_or(Value::Null)
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::List(_) => "list",
            Value::Map(_) => "map",
            Value::Unknown(_) => "unknown",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self, Value::Unknown(_))
    }

    /// True when this value or anything inside it is unknown.
    pub fn contains_unknown(&self) -> bool {
        match self {
            Value::Unknown(_) => true,
            Value::List(items) => items.iter().any(Value::contains_unknown),
            Value::Map(map) => map.values().any(Value::contains_unknown),
            _ => false,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// Looks up a path inside this value.
    pub fn get_path(&self, path: &AttrPath) -> Option<&Value> {
        let mut cur = self;
        for step in &path.0 {
            cur = match (step, cur) {
                (PathStep::Key(k), Value::Map(m)) => m.get(k)?,
                (PathStep::Index(i), Value::List(l)) => l.get(*i)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// Converts a known value to JSON. Unknown values become `null`; use
    /// [`Value::unknown_mask`] to learn where they were.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null | Value::Unknown(_) => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => serde_json::Value::Number(n.clone()),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::List(l) => serde_json::Value::Array(l.iter().map(Value::to_json).collect()),
            Value::Map(m) => serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }

    pub fn from_json(json: &serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Number(n.clone()),
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Array(a) => Value::List(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => Value::Map(o.iter().map(|(k, v)| (k.clone(), Value::from_json(v))).collect()),
        }
    }

    /// Terraform's `after_unknown` shape: `true` where a value is unknown, the same structure for
    /// collections that contain unknowns, and `false` elsewhere (collections without unknowns are
    /// collapsed to `false`).
    pub fn unknown_mask(&self) -> serde_json::Value {
        match self {
            Value::Unknown(_) => serde_json::Value::Bool(true),
            Value::List(l) if self.contains_unknown() => serde_json::Value::Array(l.iter().map(Value::unknown_mask).collect()),
            Value::Map(m) if self.contains_unknown() => {
                serde_json::Value::Object(m.iter().filter(|(_, v)| v.contains_unknown()).map(|(k, v)| (k.clone(), v.unknown_mask())).collect())
            }
            _ => serde_json::Value::Bool(false),
        }
    }

    /// All paths (leaves and collections) at which the value is unknown.
    pub fn unknown_paths(&self) -> Vec<(AttrPath, String)> {
        let mut out = Vec::new();
        fn walk(v: &Value, path: &mut Vec<PathStep>, out: &mut Vec<(AttrPath, String)>) {
            match v {
                Value::Unknown(origin) => out.push((AttrPath(path.clone()), origin.clone())),
                Value::List(l) => {
                    for (i, item) in l.iter().enumerate() {
                        path.push(PathStep::Index(i));
                        walk(item, path, out);
                        path.pop();
                    }
                }
                Value::Map(m) => {
                    for (k, item) in m {
                        path.push(PathStep::Key(k.clone()));
                        walk(item, path, out);
                        path.pop();
                    }
                }
                _ => {}
            }
        }
        walk(self, &mut Vec::new(), &mut out);
        out
    }

    /// Compact single-line HCL-like rendering used in messages and plan output.
    pub fn render_inline(&self) -> String {
        match self {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
            Value::Unknown(_) => "(known after apply)".into(),
            Value::List(l) => {
                let parts: Vec<String> = l.iter().map(Value::render_inline).collect();
                format!("[{}]", parts.join(", "))
            }
            Value::Map(m) => {
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} = {}", v.render_inline())).collect();
                format!("{{ {} }}", parts.join(", "))
            }
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Number(n.into())
    }
}

/// Unknowns serialize as `{"$unknown": "<origin>"}` so that a saved plan keeps them; every other
/// value serializes as plain JSON.
impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Number(n) => n.serialize(s),
            Value::String(v) => s.serialize_str(v),
            Value::List(l) => {
                let mut seq = s.serialize_seq(Some(l.len()))?;
                for item in l {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Value::Unknown(origin) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry(UNKNOWN_KEY, origin)?;
                map.end()
            }
        }
    }
}

const UNKNOWN_KEY: &str = "$unknown";

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let json = serde_json::Value::deserialize(d)?;
        fn conv(json: serde_json::Value) -> Value {
            match json {
                serde_json::Value::Object(o) if o.len() == 1 && o.get(UNKNOWN_KEY).is_some_and(|v| v.is_string()) => {
                    Value::Unknown(o[UNKNOWN_KEY].as_str().unwrap_or_default().to_string())
                }
                serde_json::Value::Object(o) => Value::Map(o.into_iter().map(|(k, v)| (k, conv(v))).collect()),
                serde_json::Value::Array(a) => Value::List(a.into_iter().map(conv).collect()),
                other => Value::from_json(&other),
            }
        }
        Ok(conv(json))
    }
}

/// One step of an attribute path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PathStep {
    Key(String),
    Index(usize),
}

/// A path to an attribute inside a component's attributes, e.g. `env["AGENT_NAME"]` or
/// `node_group.size`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AttrPath(pub Vec<PathStep>);

impl AttrPath {
    pub fn root() -> AttrPath {
        AttrPath(Vec::new())
    }

    pub fn attr(name: &str) -> AttrPath {
        AttrPath(vec![PathStep::Key(name.to_string())])
    }

    pub fn child_key(&self, key: &str) -> AttrPath {
        let mut steps = self.0.clone();
        steps.push(PathStep::Key(key.to_string()));
        AttrPath(steps)
    }

    pub fn child_index(&self, index: usize) -> AttrPath {
        let mut steps = self.0.clone();
        steps.push(PathStep::Index(index));
        AttrPath(steps)
    }

    /// True when `self` is `other` or lies inside it.
    pub fn starts_with(&self, other: &AttrPath) -> bool {
        self.0.len() >= other.0.len() && self.0[..other.0.len()] == other.0[..]
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                PathStep::Key(k) if is_ident(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                PathStep::Key(k) => write!(f, "[{}]", serde_json::to_string(k).unwrap_or_default())?,
                PathStep::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Redacts every path in `sensitive` from a JSON value (replacing it with `"(sensitive)"` when
/// `marker` is true, else removing nothing and returning the Terraform-style mask).
pub fn redact_json(value: &serde_json::Value, sensitive: &[AttrPath]) -> serde_json::Value {
    let mut out = value.clone();
    for path in sensitive {
        if path.is_root() {
            return serde_json::Value::String("(sensitive)".into());
        }
        if let Some(target) = get_json_mut(&mut out, path) {
            *target = serde_json::Value::String("(sensitive)".into());
        }
    }
    out
}

fn get_json_mut<'a>(mut cur: &'a mut serde_json::Value, path: &AttrPath) -> Option<&'a mut serde_json::Value> {
    for step in &path.0 {
        cur = match (step, cur) {
            (PathStep::Key(k), serde_json::Value::Object(o)) => o.get_mut(k)?,
            (PathStep::Index(i), serde_json::Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Terraform's `before_sensitive`/`after_sensitive` shape: `true` at sensitive paths.
pub fn sensitive_mask(sensitive: &[AttrPath]) -> serde_json::Value {
    let mut root = serde_json::Value::Object(Default::default());
    for path in sensitive {
        if path.is_root() {
            return serde_json::Value::Bool(true);
        }
        let mut cur = &mut root;
        let last = path.0.len() - 1;
        for (i, step) in path.0.iter().enumerate() {
            let key = match step {
                PathStep::Key(k) => k.clone(),
                PathStep::Index(n) => n.to_string(),
            };
            let obj = match cur {
                serde_json::Value::Object(o) => o,
                _ => break,
            };
            if i == last {
                obj.insert(key, serde_json::Value::Bool(true));
                break;
            }
            cur = obj.entry(key).or_insert_with(|| serde_json::Value::Object(Default::default()));
        }
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_survives_a_serde_round_trip() {
        let mut m = BTreeMap::new();
        m.insert("endpoint".to_string(), Value::Unknown("vault.main.endpoint".into()));
        m.insert("name".to_string(), Value::string("x"));
        let v = Value::Map(m);
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(text, r#"{"endpoint":{"$unknown":"vault.main.endpoint"},"name":"x"}"#);
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
        assert_eq!(v.unknown_mask(), serde_json::json!({"endpoint": true}));
    }

    #[test]
    fn paths_print_like_references() {
        let p = AttrPath::attr("env").child_key("AGENT_NAME").child_index(2);
        assert_eq!(p.to_string(), "env.AGENT_NAME[2]");
        let q = AttrPath::attr("labels").child_key("app.kubernetes.io/name");
        assert_eq!(q.to_string(), "labels[\"app.kubernetes.io/name\"]");
    }

    #[test]
    fn redaction_replaces_only_sensitive_paths() {
        let v = serde_json::json!({"user": "root", "password": "hunter2"});
        let r = redact_json(&v, &[AttrPath::attr("password")]);
        assert_eq!(r, serde_json::json!({"user": "root", "password": "(sensitive)"}));
        assert_eq!(sensitive_mask(&[AttrPath::attr("password")]), serde_json::json!({"password": true}));
    }

    #[test]
    fn one_equality_numbers_by_value_integers_exactly() {
        let n = |j: serde_json::Value| Value::from_json(&j);
        assert!(n(serde_json::json!(1)).same_as(&n(serde_json::json!(1.0))));
        assert!(!n(serde_json::json!(1)).same_as(&n(serde_json::json!("1"))));
        // 2^53 + 1 and 2^53 are the same float but different integers.
        assert!(!n(serde_json::json!(9007199254740993i64)).same_as(&n(serde_json::json!(9007199254740992i64))));
        assert!(n(serde_json::json!({"a": [1, 2.0]})).same_as(&n(serde_json::json!({"a": [1.0, 2]}))));
        assert!(!n(serde_json::json!({"a": [1, 2]})).same_as(&n(serde_json::json!({"a": [1, 2], "b": null}))));
    }
}

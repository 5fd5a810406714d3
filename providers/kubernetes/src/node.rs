//! A JSON tree borrowed from the bytes it was read from, for the items of a LIST: a plan reads
//! every object kdeploy owns (three per camera) only to digest what kdeploy owns of it, so
//! decoding into `serde_json::Value` (a `String` per key and per string, a hash map per object)
//! was most of what a no-op plan spent on a LIST. Strings without escapes are borrowed; objects
//! are vectors of entries in the order received.
//!
//! [`Tree`] is what the digest of owned fields needs to read, implemented by both trees, so
//! that a LIST item and an object returned by an apply digest the same way.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// One JSON value, borrowing its strings from the input where it can.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    /// Entries in the order received (a later duplicate key wins on lookup, as in serde_json).
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl<'a> Node<'a> {
    /// Decodes one JSON document, borrowing from `text`.
    pub fn parse(text: &'a str) -> Result<Node<'a>, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The same value as a `serde_json::Value` (owned).
    pub fn to_value(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Number(n) => Value::Number(n.clone()),
            Node::String(s) => Value::String(s.to_string()),
            Node::Array(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            Node::Object(entries) => Value::Object(entries.iter().map(|(k, v)| (k.to_string(), v.to_value())).collect()),
        }
    }
}

/// Read access to a JSON tree, as the digest of owned fields needs it.
pub trait Tree: Sized {
    fn field(&self, key: &str) -> Option<&Self>;
    fn items(&self) -> Option<&[Self]>;
    fn as_str(&self) -> Option<&str>;
    /// Equal to `want`, numbers compared by value (keys in `k:` selectors are JSON, ports are
    /// numbers there and in the object).
    fn loosely_equals(&self, want: &Value) -> bool;
    /// Equal to `want` exactly.
    fn equals(&self, want: &Value) -> bool;
    /// A scalar written as JSON (objects and arrays are written by the caller, key-sorted).
    fn write_scalar(&self, out: &mut Vec<u8>);
    /// What this is: an object, an array or a scalar.
    fn shape(&self) -> Shape<'_, Self>;
    fn to_value(&self) -> Value;

    fn pointer(&self, path: &[&str]) -> Option<&Self> {
        path.iter().try_fold(self, |at, key| at.field(key))
    }
}

pub enum Shape<'t, T> {
    Object(Vec<(&'t str, &'t T)>),
    Array(&'t [T]),
    Scalar,
}

impl Tree for Value {
    fn field(&self, key: &str) -> Option<&Value> {
        self.get(key)
    }
    fn items(&self) -> Option<&[Value]> {
        self.as_array().map(Vec::as_slice)
    }
    fn as_str(&self) -> Option<&str> {
        Value::as_str(self)
    }
    fn loosely_equals(&self, want: &Value) -> bool {
        match (self, want) {
            (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
            _ => self == want,
        }
    }
    fn equals(&self, want: &Value) -> bool {
        self == want
    }
    fn write_scalar(&self, out: &mut Vec<u8>) {
        let _ = serde_json::to_writer(&mut *out, self);
    }
    fn shape(&self) -> Shape<'_, Value> {
        match self {
            Value::Object(o) => Shape::Object(o.iter().map(|(k, v)| (k.as_str(), v)).collect()),
            Value::Array(a) => Shape::Array(a),
            _ => Shape::Scalar,
        }
    }
    fn to_value(&self) -> Value {
        self.clone()
    }
}

impl<'a> Tree for Node<'a> {
    fn field(&self, key: &str) -> Option<&Node<'a>> {
        match self {
            Node::Object(entries) => entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    fn items(&self) -> Option<&[Node<'a>]> {
        match self {
            Node::Array(items) => Some(items),
            _ => None,
        }
    }
    fn as_str(&self) -> Option<&str> {
        match self {
            Node::String(s) => Some(s),
            _ => None,
        }
    }
    fn loosely_equals(&self, want: &Value) -> bool {
        match (self, want) {
            (Node::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
            _ => self.equals(want),
        }
    }
    fn equals(&self, want: &Value) -> bool {
        match (self, want) {
            (Node::Null, Value::Null) => true,
            (Node::Bool(a), Value::Bool(b)) => a == b,
            (Node::Number(a), Value::Number(b)) => a == b,
            (Node::String(a), Value::String(b)) => a == b,
            (Node::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.equals(y)),
            (Node::Object(_), Value::Object(b)) => {
                let distinct = distinct_entries(self);
                distinct.len() == b.len() && b.iter().all(|(k, w)| distinct.iter().any(|(dk, v)| dk == k && v.equals(w)))
            }
            _ => false,
        }
    }
    fn write_scalar(&self, out: &mut Vec<u8>) {
        let _ = match self {
            Node::Null => serde_json::to_writer(&mut *out, &()),
            Node::Bool(b) => serde_json::to_writer(&mut *out, b),
            Node::Number(n) => serde_json::to_writer(&mut *out, n),
            Node::String(s) => serde_json::to_writer(&mut *out, s.as_ref()),
            other => serde_json::to_writer(&mut *out, &other.to_value()),
        };
    }
    fn shape(&self) -> Shape<'_, Node<'a>> {
        match self {
            Node::Object(_) => Shape::Object(distinct_entries(self)),
            Node::Array(a) => Shape::Array(a),
            _ => Shape::Scalar,
        }
    }
    fn to_value(&self) -> Value {
        Node::to_value(self)
    }
}

/// An object's entries with each key once (the last one received), as serde_json keeps them.
fn distinct_entries<'t, 'a>(node: &'t Node<'a>) -> Vec<(&'t str, &'t Node<'a>)> {
    let Node::Object(entries) = node else { return Vec::new() };
    let mut out: Vec<(&str, &Node<'a>)> = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        match out.iter_mut().find(|(seen, _)| *seen == k.as_ref()) {
            Some(slot) => slot.1 = v,
            None => out.push((k.as_ref(), v)),
        }
    }
    out
}

impl<'de: 'a, 'a> Deserialize<'de> for Node<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node<'a>, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        Deserialize::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Node<'de>, E> {
        Ok(Node::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Node<'de>, E> {
        Ok(Node::Number(n.into()))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Node<'de>, E> {
        Ok(serde_json::Number::from_f64(n).map_or(Node::Null, Node::Number))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(s.to_string())))
    }
    fn visit_string<E>(self, s: String) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(Key(k)) = map.next_key()? {
            entries.push((k, map.next_value()?));
        }
        Ok(Node::Object(entries))
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key<'a>, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn borrows_plain_strings_and_keys_and_owns_escaped_ones() {
        let text = r#"{"name":"cam","note":"a\"b","n":[1,2.5,-3,null,true]}"#;
        let node = Node::parse(text).unwrap();
        let Node::Object(entries) = &node else { panic!("{node:?}") };
        assert!(matches!(entries[0].0, Cow::Borrowed("name")));
        assert!(matches!(&entries[0].1, Node::String(Cow::Borrowed("cam"))));
        assert!(matches!(&entries[1].1, Node::String(Cow::Owned(s)) if s == "a\"b"));
        assert_eq!(node.to_value(), serde_json::from_str::<Value>(text).unwrap());
    }

    #[test]
    fn equality_with_values_compares_objects_regardless_of_order() {
        let node = Node::parse(r#"{"b":1,"a":{"x":[1,"y"]}}"#).unwrap();
        assert!(node.equals(&json!({"a": {"x": [1, "y"]}, "b": 1})));
        assert!(!node.equals(&json!({"a": {"x": [1, "y"]}, "b": 2})));
        assert!(!node.equals(&json!({"a": {"x": [1, "y"]}})));
        assert!(Node::parse("80").unwrap().loosely_equals(&json!(80.0)));
        assert!(!Node::parse("80").unwrap().equals(&json!(80.0)));
    }

    #[test]
    fn a_later_duplicate_key_wins_as_in_serde_json() {
        let text = r#"{"a":1,"a":2}"#;
        let node = Node::parse(text).unwrap();
        assert_eq!(node.field("a"), Some(&Node::Number(2.into())));
        assert!(node.equals(&serde_json::from_str::<Value>(text).unwrap()));
    }
}

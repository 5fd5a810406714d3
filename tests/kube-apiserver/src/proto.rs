//! Minimal decoding of `application/vnd.kubernetes.protobuf` request bodies.
//!
//! kubectl's typed clients (`kubectl create namespace|configmap|secret|serviceaccount`)
//! send protobuf. Only the envelope, ObjectMeta (name, generateName, namespace,
//! labels, annotations) and the bodies of Namespace, ConfigMap, Secret and
//! ServiceAccount are understood; anything else yields `None` (415).

use base64::Engine;
use serde_json::{Map, Value, json};

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let byte = *self.b.get(self.i)?;
            self.i += 1;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
            shift += 7;
            if shift > 63 {
                return None;
            }
        }
    }
    /// (field number, wire type, payload for length-delimited / varint value)
    fn next(&mut self) -> Option<Option<(u64, Field<'a>)>> {
        if self.i >= self.b.len() {
            return Some(None);
        }
        let tag = self.varint()?;
        let (num, wt) = (tag >> 3, tag & 7);
        let f = match wt {
            0 => Field::Varint(self.varint()?),
            2 => {
                let len = self.varint()? as usize;
                let s = self.b.get(self.i..self.i + len)?;
                self.i += len;
                Field::Bytes(s)
            }
            1 => {
                self.i += 8;
                Field::Varint(0)
            }
            5 => {
                self.i += 4;
                Field::Varint(0)
            }
            _ => return None,
        };
        Some(Some((num, f)))
    }
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn fields(b: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut r = Reader { b, i: 0 };
    let mut out = vec![];
    while let Some(f) = r.next()? {
        out.push(f);
    }
    Some(out)
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn map_entry(b: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut k = String::new();
    let mut v = vec![];
    for (n, f) in fields(b)? {
        if let Field::Bytes(x) = f {
            if n == 1 {
                k = s(x);
            } else if n == 2 {
                v = x.to_vec();
            }
        }
    }
    Some((k, v))
}

fn object_meta(b: &[u8]) -> Option<Value> {
    let mut m = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    for (n, f) in fields(b)? {
        if let Field::Bytes(x) = f {
            match n {
                1 => {
                    m.insert("name".into(), json!(s(x)));
                }
                2 => {
                    m.insert("generateName".into(), json!(s(x)));
                }
                3 => {
                    m.insert("namespace".into(), json!(s(x)));
                }
                11 => {
                    let (k, v) = map_entry(x)?;
                    labels.insert(k, json!(s(&v)));
                }
                12 => {
                    let (k, v) = map_entry(x)?;
                    annotations.insert(k, json!(s(&v)));
                }
                _ => {}
            }
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    Some(Value::Object(m))
}

/// Decode a `k8s\0`-prefixed protobuf envelope into JSON, if the kind is supported.
pub fn decode(body: &[u8]) -> Option<Value> {
    let rest = body.strip_prefix(b"k8s\0")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, f) in fields(rest)? {
        if let Field::Bytes(x) = f {
            match n {
                1 => {
                    for (tn, tf) in fields(x)? {
                        if let Field::Bytes(y) = tf {
                            if tn == 1 {
                                api_version = s(y);
                            } else if tn == 2 {
                                kind = s(y);
                            }
                        }
                    }
                }
                2 => raw = x,
                _ => {}
            }
        }
    }
    let mut o = json!({"apiVersion": api_version, "kind": kind});
    let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
    let mut data = Map::new();
    let mut string_data = Map::new();
    let mut binary = Map::new();
    for (n, f) in fields(raw)? {
        match (kind.as_str(), n, f) {
            (_, 1, Field::Bytes(x)) => o["metadata"] = object_meta(x)?,
            ("Namespace", 2, Field::Bytes(x)) => {
                let mut fin = vec![];
                for (sn, sf) in fields(x)? {
                    if let (1, Field::Bytes(y)) = (sn, sf) {
                        fin.push(json!(s(y)));
                    }
                }
                if !fin.is_empty() {
                    o["spec"] = json!({"finalizers": fin});
                }
            }
            ("Namespace", 3, _) => {}
            ("ConfigMap", 2, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                data.insert(k, json!(s(&v)));
            }
            ("ConfigMap", 3, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                binary.insert(k, json!(b64(&v)));
            }
            ("ConfigMap" | "Secret", 4 | 5, Field::Varint(v)) if (kind == "ConfigMap") == (n == 4) => {
                o["immutable"] = json!(v != 0);
            }
            ("Secret", 2, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                data.insert(k, json!(b64(&v)));
            }
            ("Secret", 3, Field::Bytes(x)) => o["type"] = json!(s(x)),
            ("Secret", 4, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                string_data.insert(k, json!(s(&v)));
            }
            ("ServiceAccount", _, _) => {}
            _ => return None,
        }
    }
    if !data.is_empty() {
        o["data"] = Value::Object(data);
    }
    if !binary.is_empty() {
        o["binaryData"] = Value::Object(binary);
    }
    if !string_data.is_empty() {
        o["stringData"] = Value::Object(string_data);
    }
    Some(o)
}

//! Encoding functions: JSON (`jsonencode`, `jsondecode`) and Base64 (`base64encode`,
//! `base64decode`).
#![deny(clippy::arithmetic_side_effects)]

use std::fmt::Write as _;

use base64::Engine as _;
use kdeploy_provider::Value;

use super::numeric::{Num, num_to_string};
use super::{Call, Result, quote};

/// Compact JSON as Terraform's `jsonencode` writes it: object keys sorted, numbers without
/// exponents, and `<`, `>`, `&`, U+2028 and U+2029 escaped as `\uXXXX`.
pub(super) fn json_encode(v: &Value) -> String {
    let mut out = String::new();
    write_json(v, &mut out);
    out
}

fn write_json(v: &Value, out: &mut String) {
    match v {
        Value::Null | Value::Unknown(_) => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&num_to_string(n)),
        Value::String(s) => write_json_string(s, out),
        Value::List(l) => {
            out.push('[');
            for (i, item) in l.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push('{');
            for (i, (k, item)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(k, out);
                out.push(':');
                write_json(item, out);
            }
            out.push('}');
        }
    }
}

fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", ch as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

pub(super) fn f_jsonencode(c: &Call) -> Result<Value> {
    Ok(Value::String(json_encode(c.arg(0))))
}

pub(super) fn f_jsondecode(c: &Call) -> Result<Value> {
    let s = c.str(0)?;
    let json: serde_json::Value = serde_json::from_str(&s).map_err(|e| c.invalid(0, format!("invalid JSON: {e}")))?;
    fn normalize(v: Value) -> Value {
        match v {
            Value::Number(n) => Num::of(&n).value(),
            Value::List(l) => Value::List(l.into_iter().map(normalize).collect()),
            Value::Map(m) => Value::Map(m.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
            v => v,
        }
    }
    Ok(normalize(Value::from_json(&json)))
}

pub(super) fn f_base64encode(c: &Call) -> Result<Value> {
    Ok(Value::String(base64::engine::general_purpose::STANDARD.encode(c.str(0)?)))
}

pub(super) fn f_base64decode(c: &Call) -> Result<Value> {
    let s = c.str(0)?;
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(s.as_bytes()).map_err(|e| c.invalid(0, format!("failed to decode base64 data {}: {e}", quote(&s))))?;
    String::from_utf8(bytes).map(Value::String).map_err(|_| c.invalid(0, "the result of decoding the provided string is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use crate::config::functions::test_support::*;

    #[test]
    fn jsonencode_is_compact_and_sorted() {
        let v = map(&[
            ("b", list(vec![n(1), f(2.5), Value::Bool(true), Value::Null])),
            ("a", map(&[("z", s("x")), ("y", list(vec![]))])),
            ("c", s("<tag> & \"q\"\n")),
        ]);
        assert_eq!(ok("jsonencode", vec![v]), s(r#"{"a":{"y":[],"z":"x"},"b":[1,2.5,true,null],"c":"\u003ctag\u003e \u0026 \"q\"\n"}"#));
        assert_eq!(ok("jsonencode", vec![s("hi")]), s("\"hi\""));
        assert_eq!(ok("jsonencode", vec![Value::Null]), s("null"));
        assert_eq!(ok("jsonencode", vec![f(0.0000001)]), s("0.0000001"));
    }

    #[test]
    fn jsondecode_round_trip() {
        let v = map(&[("list", list(vec![n(1), f(1.5), s("x"), Value::Null, Value::Bool(false)])), ("nested", map(&[("k", map(&[]))])), ("s", s("a<b"))]);
        let text = ok("jsonencode", vec![v.clone()]);
        assert_eq!(ok("jsondecode", vec![text]), v);
        assert_eq!(ok("jsondecode", vec![s("2.0")]), n(2));
        assert_eq!(ok("jsondecode", vec![s("\"x\"")]), s("x"));
        assert_eq!(
            err("jsondecode", vec![s("{bad")]),
            err_at(0, "Invalid value for \"str\" parameter: invalid JSON: key must be a string at line 1 column 2.")
        );
    }

    #[test]
    fn base64_round_trip() {
        assert_eq!(ok("base64encode", vec![s("Hello World")]), s("SGVsbG8gV29ybGQ="));
        assert_eq!(ok("base64decode", vec![s("SGVsbG8gV29ybGQ=")]), s("Hello World"));
        assert_eq!(ok("base64encode", vec![s("")]), s(""));
        assert_eq!(err("base64decode", vec![s("not base64!")]).arg, Some(0));
        assert!(
            err("base64decode", vec![s("not base64!")])
                .message
                .starts_with("Invalid value for \"str\" parameter: failed to decode base64 data \"not base64!\"")
        );
        assert_eq!(
            err("base64decode", vec![s("/w==")]),
            err_at(0, "Invalid value for \"str\" parameter: the result of decoding the provided string is not valid UTF-8.")
        );
    }
}

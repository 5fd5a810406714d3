//! Terraform's automatic type conversions (a number or bool where a string is expected, a numeric
//! string where a number is expected, ...), the type unification of collection elements, and the
//! explicit conversion functions built on them (`tostring`, `tonumber`, `tolist`, `toset`,
//! `tomap`). `can` and `try` need unevaluated expressions, so the evaluator implements them.
#![deny(clippy::arithmetic_side_effects)]

use kdeploy_provider::Value;

use super::collections::dedup;
use super::numeric::{Num, num_to_string};
use super::{Call, Result, quote};

/// Converts a primitive to a string the way Terraform does. Errors are bare messages.
pub(super) fn to_str(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(num_to_string(n)),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Err("argument must not be null".into()),
        v => Err(format!("must be a string; got {}", v.type_name())),
    }
}

pub(super) fn to_num(v: &Value) -> Result<Num, String> {
    match v {
        Value::Number(n) => Ok(Num::of(n)),
        Value::String(s) => {
            parse_number(s).ok_or_else(|| format!("cannot convert {} to number; given string must be a decimal representation of a number", quote(s)))
        }
        Value::Null => Err("argument must not be null".into()),
        v => Err(format!("a number is required; got {}", v.type_name())),
    }
}

pub(super) fn to_bool(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        Value::String(s) => Err(format!("cannot convert {} to bool; only \"true\" or \"false\" is allowed", quote(s))),
        Value::Null => Err("argument must not be null".into()),
        v => Err(format!("a bool is required; got {}", v.type_name())),
    }
}

/// Parses a decimal number: an optional sign, digits with an optional fraction and an optional
/// exponent. No whitespace, no `inf`/`NaN`, no hexadecimal.
#[allow(clippy::arithmetic_side_effects)] // positions and counts within input already in memory: bounded by its length
pub(super) fn parse_number(s: &str) -> Option<Num> {
    let bytes = s.as_bytes();
    let mut i = 0;
    if matches!(bytes.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let int_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    let mut is_float = false;
    if i < bytes.len() && bytes[i] == b'.' {
        is_float = true;
        i += 1;
        let frac_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return None;
    }
    if i < bytes.len() && matches!(bytes[i], b'e' | b'E') {
        is_float = true;
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return None;
        }
    }
    if i != bytes.len() {
        return None;
    }
    if !is_float && let Ok(n) = s.parse::<i64>() {
        return Some(Num::Int(n));
    }
    let f: f64 = s.parse().ok()?;
    if !f.is_finite() {
        return None;
    }
    match Value::from_f64(f) {
        Value::Number(n) => Some(Num::of(&n)),
        _ => None,
    }
}

/// Gives a collection's elements a common type the way Terraform's type unification does for
/// primitives: when strings are mixed with numbers or bools, or numbers with bools, everything
/// becomes a string. Mixing primitives with collections, or lists with maps, is an error.
#[allow(clippy::arithmetic_side_effects)] // positions and counts within input already in memory: bounded by its length
pub(super) fn unify(items: Vec<Value>) -> Result<Vec<Value>, String> {
    let (mut strings, mut numbers, mut bools, mut lists, mut maps) = (0, 0, 0, 0, 0);
    for item in &items {
        match item {
            Value::String(_) => strings += 1,
            Value::Number(_) => numbers += 1,
            Value::Bool(_) => bools += 1,
            Value::List(_) => lists += 1,
            Value::Map(_) => maps += 1,
            Value::Null | Value::Unknown(_) => {}
        }
    }
    let primitive_kinds = [strings, numbers, bools].iter().filter(|&&n| n > 0).count();
    let collection_kinds = [lists, maps].iter().filter(|&&n| n > 0).count();
    if primitive_kinds + collection_kinds > 1 && collection_kinds > 0 {
        return Err("all elements must have the same type".into());
    }
    if primitive_kinds > 1 {
        return Ok(items
            .into_iter()
            .map(|v| match v {
                Value::Null => Value::Null,
                v => Value::String(to_str(&v).unwrap_or_default()),
            })
            .collect());
    }
    Ok(items)
}

pub(super) fn f_tostring(c: &Call) -> Result<Value> {
    match c.arg(0) {
        Value::Null => Ok(Value::Null),
        v => to_str(v).map(Value::String).map_err(|_| c.invalid(0, format!("cannot convert {} to string", v.type_name()))),
    }
}

pub(super) fn f_tonumber(c: &Call) -> Result<Value> {
    match c.arg(0) {
        Value::Null => Ok(Value::Null),
        Value::Number(n) => Ok(Num::of(n).value()),
        Value::String(_) => Ok(c.num(0)?.value()),
        v => Err(c.invalid(0, format!("cannot convert {} to number", v.type_name()))),
    }
}

pub(super) fn f_tolist(c: &Call) -> Result<Value> {
    match c.arg(0) {
        Value::Null => Ok(Value::Null),
        Value::List(l) => Ok(Value::List(unify(l.clone()).map_err(|m| c.invalid(0, m))?)),
        v => Err(c.invalid(0, format!("cannot convert {} to list", v.type_name()))),
    }
}

pub(super) fn f_toset(c: &Call) -> Result<Value> {
    match c.arg(0) {
        Value::Null => Ok(Value::Null),
        Value::List(l) => Ok(Value::List(dedup(unify(l.clone()).map_err(|m| c.invalid(0, m))?))),
        v => Err(c.invalid(0, format!("cannot convert {} to set", v.type_name()))),
    }
}

pub(super) fn f_tomap(c: &Call) -> Result<Value> {
    match c.arg(0) {
        Value::Null => Ok(Value::Null),
        Value::Map(m) => {
            let values = unify(m.values().cloned().collect()).map_err(|m| c.invalid(0, m))?;
            Ok(Value::Map(m.keys().cloned().zip(values).collect()))
        }
        v => Err(c.invalid(0, format!("cannot convert {} to map", v.type_name()))),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::functions::test_support::*;

    #[test]
    fn conversions_between_collections() {
        assert_eq!(ok("tolist", vec![list(vec![n(1), s("a")])]), strs(&["1", "a"]));
        assert_eq!(ok("toset", vec![strs(&["b", "a", "b"])]), strs(&["b", "a"]));
        assert_eq!(ok("toset", vec![list(vec![n(1), s("1")])]), strs(&["1"]));
        assert_eq!(ok("tomap", vec![map(&[("a", n(1)), ("b", s("x"))])]), map(&[("a", s("1")), ("b", s("x"))]));
        assert_eq!(ok("tolist", vec![Value::Null]), Value::Null);
        assert_eq!(err("tolist", vec![map(&[])]), err_at(0, "Invalid value for \"v\" parameter: cannot convert map to list."));
        assert_eq!(err("tomap", vec![strs(&["a"])]), err_at(0, "Invalid value for \"v\" parameter: cannot convert list to map."));
        assert_eq!(
            err("tolist", vec![list(vec![s("a"), strs(&["b"])])]),
            err_at(0, "Invalid value for \"v\" parameter: all elements must have the same type.")
        );
    }

    #[test]
    fn tostring_and_tonumber() {
        assert_eq!(ok("tostring", vec![n(12)]), s("12"));
        assert_eq!(ok("tostring", vec![f(1.5)]), s("1.5"));
        assert_eq!(ok("tostring", vec![Value::Bool(false)]), s("false"));
        assert_eq!(ok("tostring", vec![Value::Null]), Value::Null);
        assert_eq!(err("tostring", vec![strs(&["a"])]), err_at(0, "Invalid value for \"v\" parameter: cannot convert list to string."));
        assert_eq!(ok("tonumber", vec![s("12")]), n(12));
        assert_eq!(ok("tonumber", vec![s("-1.25")]), f(-1.25));
        assert_eq!(ok("tonumber", vec![s("1e3")]), n(1000));
        assert_eq!(ok("tonumber", vec![n(5)]), n(5));
        assert_eq!(ok("tonumber", vec![Value::Null]), Value::Null);
        assert_eq!(
            err("tonumber", vec![s("abc")]),
            err_at(0, "Invalid value for \"v\" parameter: cannot convert \"abc\" to number; given string must be a decimal representation of a number.")
        );
        for bad in ["", " 1", "inf", "NaN", "0x10", "1e", "."] {
            assert!(run("tonumber", vec![s(bad)]).is_err(), "{bad:?} should not convert");
        }
        assert_eq!(err("tonumber", vec![Value::Bool(true)]), err_at(0, "Invalid value for \"v\" parameter: cannot convert bool to number."));
    }
}

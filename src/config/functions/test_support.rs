//! Helpers shared by the unit tests of every family. The tests call functions by name through
//! [`call`], so that each one also goes through the registry, the arity check and the
//! argument conversions.
#![deny(clippy::arithmetic_side_effects)]

use std::path::Path;

pub(super) use super::{FuncContext, call};
use super::{FuncError, Result};
pub(super) use kdeploy_provider::Value;

pub(super) fn s(v: &str) -> Value {
    Value::string(v)
}
pub(super) fn n(i: i64) -> Value {
    Value::from_i64(i)
}
pub(super) fn f(x: f64) -> Value {
    Value::from_f64(x)
}
pub(super) fn list(items: Vec<Value>) -> Value {
    Value::List(items)
}
pub(super) fn strs(items: &[&str]) -> Value {
    Value::List(items.iter().map(|x| s(x)).collect())
}
pub(super) fn map(items: &[(&str, Value)]) -> Value {
    Value::Map(items.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
}

pub(super) fn run(name: &str, args: Vec<Value>) -> Result<Value> {
    let ctx = FuncContext { base_dir: Path::new("/nonexistent-base") };
    call(name, &args, &ctx)
}
pub(super) fn ok(name: &str, args: Vec<Value>) -> Value {
    run(name, args).unwrap_or_else(|e| panic!("{name} failed: {}", e.message))
}
pub(super) fn err(name: &str, args: Vec<Value>) -> FuncError {
    match run(name, args) {
        Ok(v) => panic!("{name} unexpectedly returned {}", v.render_inline()),
        Err(e) => e,
    }
}
pub(super) fn err_at(arg: usize, message: &str) -> FuncError {
    FuncError { arg: Some(arg), message: message.to_string() }
}
pub(super) fn err_general(message: &str) -> FuncError {
    FuncError { arg: None, message: message.to_string() }
}

//! Numbers: the representation every function uses (integers stay integers) and the numeric
//! functions (`abs`, `ceil`, `floor`, `max`, `min`).
#![deny(clippy::arithmetic_side_effects)]

use kdeploy_provider::Value;

use super::{Call, Result};

/// A number, keeping integers as integers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    pub(super) fn of(n: &serde_json::Number) -> Num {
        match n.as_i64() {
            Some(i) => Num::Int(i),
            None => Num::Float(n.as_f64().unwrap_or(f64::NAN)),
        }
    }

    pub(super) fn f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    pub(super) fn as_int(self) -> Option<i64> {
        match self {
            Num::Int(i) => Some(i),
            Num::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Some(f as i64),
            Num::Float(_) => None,
        }
    }

    pub(super) fn value(self) -> Value {
        match self {
            Num::Int(i) => Value::from_i64(i),
            Num::Float(f) => Value::from_f64(f),
        }
    }
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Num::Int(i) => write!(f, "{i}"),
            // Rust prints the shortest round-tripping digits and never uses an exponent, which is
            // how Terraform prints numbers too.
            Num::Float(x) => write!(f, "{x}"),
        }
    }
}

pub(super) fn num_to_string(n: &serde_json::Number) -> String {
    Num::of(n).to_string()
}

fn extreme(c: &Call, want_max: bool) -> Result<Value> {
    let mut best: Option<Num> = None;
    for i in 0..c.args.len() {
        let n = c.num(i)?;
        let better = match best {
            None => true,
            Some(b) if want_max => n.f64() > b.f64(),
            Some(b) => n.f64() < b.f64(),
        };
        if better {
            best = Some(n);
        }
    }
    Ok(best.map(Num::value).unwrap_or_default())
}

pub(super) fn f_min(c: &Call) -> Result<Value> {
    extreme(c, false)
}

pub(super) fn f_max(c: &Call) -> Result<Value> {
    extreme(c, true)
}

pub(super) fn f_abs(c: &Call) -> Result<Value> {
    Ok(match c.num(0)? {
        Num::Int(i) => match i.checked_abs() {
            Some(a) => Value::from_i64(a),
            None => Value::from_f64((i as f64).abs()),
        },
        Num::Float(f) => Value::from_f64(f.abs()),
    })
}

pub(super) fn f_ceil(c: &Call) -> Result<Value> {
    Ok(match c.num(0)? {
        Num::Int(i) => Value::from_i64(i),
        Num::Float(f) => Value::from_f64(f.ceil()),
    })
}

pub(super) fn f_floor(c: &Call) -> Result<Value> {
    Ok(match c.num(0)? {
        Num::Int(i) => Value::from_i64(i),
        Num::Float(f) => Value::from_f64(f.floor()),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::functions::test_support::*;

    #[test]
    fn numbers() {
        assert_eq!(ok("min", vec![n(3), f(1.5), s("2")]), f(1.5));
        assert_eq!(ok("max", vec![n(3), f(1.5), s("12")]), n(12));
        assert_eq!(ok("abs", vec![n(-4)]), n(4));
        assert_eq!(ok("abs", vec![f(-2.5)]), f(2.5));
        assert_eq!(ok("ceil", vec![f(1.2)]), n(2));
        assert_eq!(ok("floor", vec![f(-1.2)]), n(-2));
        assert_eq!(ok("floor", vec![n(7)]), n(7));
        assert_eq!(err("abs", vec![Value::Bool(true)]), err_at(0, "Invalid value for \"num\" parameter: a number is required; got bool."));
        assert_eq!(
            err("max", vec![n(1), s("x")]),
            err_at(1, "Invalid value for \"numbers\" parameter: cannot convert \"x\" to number; given string must be a decimal representation of a number.")
        );
    }
}

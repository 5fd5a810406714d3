//! Functions over lists and maps: size and lookup, combining, searching, slicing and ordering,
//! `range`, and the list reductions (`sum`, `alltrue`, `anytrue`, `coalesce`, `coalescelist`).
#![deny(clippy::arithmetic_side_effects)]

use std::collections::BTreeMap;

use kdeploy_provider::Value;

use super::conversion::{to_bool, to_num, to_str, unify};
use super::numeric::Num;
use super::{Call, Result, general, quote};

pub(super) fn dedup(items: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(items.len());
    for item in items {
        if !out.iter().any(|seen| seen.same_as(&item)) {
            out.push(item);
        }
    }
    out
}

pub(super) fn f_length(c: &Call) -> Result<Value> {
    let n = match c.not_null(0)? {
        Value::String(s) => s.chars().count(),
        Value::List(l) => l.len(),
        Value::Map(m) => m.len(),
        v => {
            return Err(c.invalid(0, format!("must be a list, map or string; got {}", v.type_name())));
        }
    };
    Ok(Value::from_i64(n as i64))
}

pub(super) fn f_keys(c: &Call) -> Result<Value> {
    let m = c.map(0)?;
    Ok(Value::List(m.keys().map(|k| Value::string(k.clone())).collect()))
}

pub(super) fn f_values(c: &Call) -> Result<Value> {
    let m = c.map(0)?;
    Ok(Value::List(m.values().cloned().collect()))
}

pub(super) fn f_lookup(c: &Call) -> Result<Value> {
    let m = c.map(0)?;
    let key = c.str(1)?;
    match m.get(&key) {
        Some(v) => Ok(v.clone()),
        None if c.args.len() == 3 => Ok(c.arg(2).clone()),
        None => Err(c.invalid(1, format!("lookup failed to find key {}", quote(&key)))),
    }
}

pub(super) fn f_merge(c: &Call) -> Result<Value> {
    let mut out = BTreeMap::new();
    for (i, arg) in c.args.iter().enumerate() {
        match arg {
            Value::Null => {}
            Value::Map(m) => out.extend(m.iter().map(|(k, v)| (k.clone(), v.clone()))),
            v => {
                return Err(c.invalid(i, format!("must be a map or object; got {}", v.type_name())));
            }
        }
    }
    Ok(Value::Map(out))
}

pub(super) fn f_concat(c: &Call) -> Result<Value> {
    let mut out = Vec::new();
    for i in 0..c.args.len() {
        match c.not_null(i)? {
            Value::List(l) => out.extend(l.iter().cloned()),
            v => {
                return Err(c.invalid(i, format!("all arguments must be lists or tuples; got {}", v.type_name())));
            }
        }
    }
    Ok(Value::List(out))
}

pub(super) fn f_contains(c: &Call) -> Result<Value> {
    let list = c.list(0)?;
    let needle = c.arg(1);
    Ok(Value::Bool(list.iter().any(|v| v.same_as(needle))))
}

pub(super) fn f_index(c: &Call) -> Result<Value> {
    let list = c.list(0)?;
    let needle = c.arg(1);
    match list.iter().position(|v| v.same_as(needle)) {
        Some(i) => Ok(Value::from_i64(i as i64)),
        None => Err(c.invalid(1, "item not found")),
    }
}

pub(super) fn f_element(c: &Call) -> Result<Value> {
    let list = c.list(0)?;
    let index = c.int(1)?;
    if list.is_empty() {
        return Err(c.invalid(0, "cannot use element function with an empty list"));
    }
    if index < 0 {
        return Err(c.invalid(1, "cannot use element function with a negative index"));
    }
    let at = (index as u64).checked_rem(list.len() as u64).unwrap_or(0) as usize;
    Ok(list[at].clone())
}

pub(super) fn f_flatten(c: &Call) -> Result<Value> {
    fn walk(items: &[Value], out: &mut Vec<Value>) {
        for item in items {
            match item {
                Value::List(inner) => walk(inner, out),
                v => out.push(v.clone()),
            }
        }
    }
    let mut out = Vec::new();
    walk(c.list(0)?, &mut out);
    Ok(Value::List(out))
}

pub(super) fn f_distinct(c: &Call) -> Result<Value> {
    Ok(Value::List(dedup(c.list(0)?.to_vec())))
}

/// The most values `range` generates (as Terraform).
const MAX_RANGE: usize = 1024;

#[allow(clippy::arithmetic_side_effects)] // at most MAX_RANGE values are generated, then it stops
pub(super) fn f_range(c: &Call) -> Result<Value> {
    let nums: Vec<Num> = (0..c.args.len()).map(|i| c.num(i)).collect::<Result<_>>()?;
    let one = Num::Int(1);
    let minus_one = Num::Int(-1);
    let (start, end, step) = match nums[..] {
        [end] => (Num::Int(0), end, if end.f64() < 0.0 { minus_one } else { one }),
        [start, end] => (start, end, if end.f64() < start.f64() { minus_one } else { one }),
        [start, end, step] => (start, end, step),
        _ => unreachable!("arity is checked before the call"),
    };
    if step.f64() == 0.0 {
        return Err(c.invalid(2, "step must not be zero"));
    }
    let down = step.f64() < 0.0;
    if down && end.f64() > start.f64() {
        return Err(c.invalid(1, "end must be less than start when step is negative"));
    }
    if !down && end.f64() < start.f64() {
        return Err(c.invalid(1, "end must be greater than start when step is positive"));
    }
    let all_int = [start, end, step].iter().all(|n| matches!(n, Num::Int(_)));
    let mut out = Vec::new();
    let mut k: i64 = 0;
    loop {
        // Computing each value from the start avoids accumulating rounding errors.
        let value = if all_int {
            match (start, step) {
                (Num::Int(s), Num::Int(st)) => {
                    match k.checked_mul(st).and_then(|d| s.checked_add(d)) {
                        Some(v) => Num::Int(v),
                        // Beyond the i64 range, and so beyond any integer limit.
                        None => break,
                    }
                }
                _ => unreachable!(),
            }
        } else {
            Num::Float(start.f64() + k as f64 * step.f64())
        };
        let done = if down { value.f64() <= end.f64() } else { value.f64() >= end.f64() };
        if done {
            break;
        }
        if out.len() >= MAX_RANGE {
            return Err(general("more than 1024 values were generated; either decrease the difference between start and end or use a smaller step"));
        }
        out.push(value.value());
        k += 1;
    }
    Ok(Value::List(out))
}

pub(super) fn f_zipmap(c: &Call) -> Result<Value> {
    let keys = c.str_list(0)?;
    let values = c.list(1)?;
    if keys.len() != values.len() {
        return Err(general(format!("number of keys ({}) does not match number of values ({})", keys.len(), values.len())));
    }
    Ok(Value::Map(keys.into_iter().zip(values.iter().cloned()).collect()))
}

pub(super) fn f_sort(c: &Call) -> Result<Value> {
    let mut items = c.str_list(0)?;
    items.sort();
    Ok(Value::List(items.into_iter().map(Value::String).collect()))
}

pub(super) fn f_reverse(c: &Call) -> Result<Value> {
    Ok(Value::List(c.list(0)?.iter().rev().cloned().collect()))
}

pub(super) fn f_slice(c: &Call) -> Result<Value> {
    let list = c.list(0)?;
    let start = c.int(1)?;
    let end = c.int(2)?;
    if start < 0 {
        return Err(c.invalid(1, "start index must not be less than zero"));
    }
    if end > list.len() as i64 {
        return Err(c.invalid(2, "end index must not be greater than the length of the list"));
    }
    if start > end {
        return Err(c.invalid(1, "start index must not be greater than end index"));
    }
    Ok(Value::List(list[start as usize..end as usize].to_vec()))
}

pub(super) fn f_compact(c: &Call) -> Result<Value> {
    let list = c.list(0)?;
    let mut out = Vec::new();
    for (n, v) in list.iter().enumerate() {
        if v.is_null() {
            continue;
        }
        let s = to_str(v).map_err(|m| c.invalid(0, format!("element {n}: {m}")))?;
        if !s.is_empty() {
            out.push(Value::String(s));
        }
    }
    Ok(Value::List(out))
}

pub(super) fn f_one(c: &Call) -> Result<Value> {
    match c.arg(0) {
        Value::List(l) if l.is_empty() => Ok(Value::Null),
        Value::List(l) if l.len() == 1 => Ok(l[0].clone()),
        _ => Err(c.invalid(0, "must be a list, set, or tuple value with either zero or one elements")),
    }
}

pub(super) fn f_sum(c: &Call) -> Result<Value> {
    let list = c.list(0)?;
    if list.is_empty() {
        return Err(c.invalid(0, "cannot sum an empty list"));
    }
    let mut total = Num::Int(0);
    for (n, v) in list.iter().enumerate() {
        let x = to_num(v).map_err(|m| c.invalid(0, format!("element {n}: {m}")))?;
        total = match (total, x) {
            (Num::Int(a), Num::Int(b)) => match a.checked_add(b) {
                Some(s) => Num::Int(s),
                None => Num::Float(a as f64 + b as f64),
            },
            (a, b) => Num::Float(a.f64() + b.f64()),
        };
    }
    Ok(total.value())
}

fn bool_list(c: &Call) -> Result<Vec<Option<bool>>> {
    c.list(0)?
        .iter()
        .enumerate()
        .map(|(n, v)| match v {
            Value::Null => Ok(None),
            v => to_bool(v).map(Some).map_err(|m| c.invalid(0, format!("element {n}: {m}"))),
        })
        .collect()
}

pub(super) fn f_alltrue(c: &Call) -> Result<Value> {
    Ok(Value::Bool(bool_list(c)?.iter().all(|b| *b == Some(true))))
}

pub(super) fn f_anytrue(c: &Call) -> Result<Value> {
    Ok(Value::Bool(bool_list(c)?.contains(&Some(true))))
}

pub(super) fn f_coalesce(c: &Call) -> Result<Value> {
    let unified = unify(c.args.to_vec()).map_err(|_| general("all arguments must have the same type"))?;
    unified.into_iter().find(|v| !v.is_null() && v.as_str() != Some("")).ok_or_else(|| general("no non-null, non-empty-string arguments"))
}

pub(super) fn f_coalescelist(c: &Call) -> Result<Value> {
    for (i, arg) in c.args.iter().enumerate() {
        match arg {
            Value::Null => {}
            Value::List(l) if l.is_empty() => {}
            Value::List(_) => return Ok(arg.clone()),
            v => {
                return Err(c.invalid(i, format!("coalescelist arguments must be lists or tuples; got {}", v.type_name())));
            }
        }
    }
    Err(general("no non-null arguments"))
}

#[cfg(test)]
mod tests {
    use crate::config::functions::test_support::*;

    #[test]
    fn length_counts_chars_elements_and_keys() {
        assert_eq!(ok("length", vec![s("héllo✓")]), n(6));
        assert_eq!(ok("length", vec![s("")]), n(0));
        assert_eq!(ok("length", vec![strs(&["a", "b"])]), n(2));
        assert_eq!(ok("length", vec![map(&[("a", n(1))])]), n(1));
        assert_eq!(err("length", vec![Value::Bool(true)]), err_at(0, "Invalid value for \"list\" parameter: must be a list, map or string; got bool."));
        assert_eq!(err("length", vec![Value::Null]), err_at(0, "Invalid value for \"list\" parameter: argument must not be null."));
    }

    #[test]
    fn keys_and_values_are_in_lexical_key_order() {
        let m = map(&[("b", n(2)), ("a", n(1)), ("C", n(3))]);
        assert_eq!(ok("keys", vec![m.clone()]), strs(&["C", "a", "b"]));
        assert_eq!(ok("values", vec![m]), list(vec![n(3), n(1), n(2)]));
        assert_eq!(err("keys", vec![strs(&["a"])]), err_at(0, "Invalid value for \"inputMap\" parameter: must be a map; got list."));
        assert_eq!(err("values", vec![s("x")]), err_at(0, "Invalid value for \"mapping\" parameter: must be a map; got string."));
    }

    #[test]
    fn lookup_with_and_without_default() {
        let m = map(&[("a", s("x")), ("n", n(1))]);
        assert_eq!(ok("lookup", vec![m.clone(), s("a")]), s("x"));
        assert_eq!(ok("lookup", vec![m.clone(), s("b"), s("dflt")]), s("dflt"));
        assert_eq!(ok("lookup", vec![m.clone(), s("n"), n(0)]), n(1));
        assert_eq!(err("lookup", vec![m, s("b")]), err_at(1, "Invalid value for \"key\" parameter: lookup failed to find key \"b\"."));
        assert_eq!(err("lookup", vec![strs(&["a"]), s("a")]), err_at(0, "Invalid value for \"inputMap\" parameter: must be a map; got list."));
    }

    #[test]
    fn merge_later_wins_and_nulls_are_ignored() {
        let a = map(&[("x", n(1)), ("y", n(2))]);
        let b = map(&[("y", n(20)), ("z", n(30))]);
        assert_eq!(ok("merge", vec![a.clone(), Value::Null, b.clone()]), map(&[("x", n(1)), ("y", n(20)), ("z", n(30))]));
        assert_eq!(ok("merge", vec![b, a]), map(&[("x", n(1)), ("y", n(2)), ("z", n(30))]));
        assert_eq!(ok("merge", vec![]), map(&[]));
        // Shallow: nested maps are replaced, not merged.
        assert_eq!(ok("merge", vec![map(&[("m", map(&[("a", n(1))]))]), map(&[("m", map(&[("b", n(2))]))])]), map(&[("m", map(&[("b", n(2))]))]));
        assert_eq!(err("merge", vec![map(&[]), strs(&["a"])]), err_at(1, "Invalid value for \"maps\" parameter: must be a map or object; got list."));
    }

    #[test]
    fn concat_lists() {
        assert_eq!(ok("concat", vec![strs(&["a"]), list(vec![]), list(vec![n(1), n(2)])]), list(vec![s("a"), n(1), n(2)]));
        assert_eq!(
            err("concat", vec![strs(&["a"]), s("b")]),
            err_at(1, "Invalid value for \"seqs\" parameter: all arguments must be lists or tuples; got string.")
        );
    }

    #[test]
    fn contains_and_index() {
        let l = list(vec![s("a"), n(1), s("c")]);
        assert_eq!(ok("contains", vec![l.clone(), s("c")]), Value::Bool(true));
        assert_eq!(ok("contains", vec![l.clone(), f(1.0)]), Value::Bool(true));
        assert_eq!(ok("contains", vec![l.clone(), s("z")]), Value::Bool(false));
        assert_eq!(ok("index", vec![l.clone(), s("c")]), n(2));
        assert_eq!(err("index", vec![l, s("z")]), err_at(1, "Invalid value for \"value\" parameter: item not found."));
        assert_eq!(err("contains", vec![s("abc"), s("a")]), err_at(0, "Invalid value for \"list\" parameter: must be a list; got string."));
    }

    #[test]
    fn element_wraps_around() {
        let l = strs(&["a", "b", "c"]);
        assert_eq!(ok("element", vec![l.clone(), n(1)]), s("b"));
        assert_eq!(ok("element", vec![l.clone(), n(5)]), s("c"));
        assert_eq!(ok("element", vec![l.clone(), s("3")]), s("a"));
        assert_eq!(
            err("element", vec![l.clone(), n(-1)]),
            err_at(1, "Invalid value for \"index\" parameter: cannot use element function with a negative index.")
        );
        assert_eq!(err("element", vec![l, f(1.5)]), err_at(1, "Invalid value for \"index\" parameter: must be a whole number; got 1.5."));
        assert_eq!(
            err("element", vec![list(vec![]), n(0)]),
            err_at(0, "Invalid value for \"list\" parameter: cannot use element function with an empty list.")
        );
    }

    #[test]
    fn flatten_distinct_reverse() {
        let nested = list(vec![s("a"), list(vec![s("b"), list(vec![s("c")])]), list(vec![]), map(&[("k", n(1))])]);
        assert_eq!(ok("flatten", vec![nested]), list(vec![s("a"), s("b"), s("c"), map(&[("k", n(1))])]));
        assert_eq!(ok("distinct", vec![list(vec![s("a"), s("b"), s("a"), n(1), f(1.0), s("c")])]), list(vec![s("a"), s("b"), n(1), s("c")]));
        assert_eq!(ok("reverse", vec![strs(&["a", "b", "c"])]), strs(&["c", "b", "a"]));
    }

    #[test]
    fn range_variants() {
        assert_eq!(ok("range", vec![n(3)]), list(vec![n(0), n(1), n(2)]));
        assert_eq!(ok("range", vec![n(1), n(4)]), list(vec![n(1), n(2), n(3)]));
        assert_eq!(ok("range", vec![n(4), n(1)]), list(vec![n(4), n(3), n(2)]));
        assert_eq!(ok("range", vec![n(0), n(10), n(4)]), list(vec![n(0), n(4), n(8)]));
        assert_eq!(ok("range", vec![n(1), n(2), f(0.5)]), list(vec![n(1), f(1.5)]));
        assert_eq!(ok("range", vec![n(-2)]), list(vec![n(0), n(-1)]));
        assert_eq!(ok("range", vec![n(0)]), list(vec![]));
        assert_eq!(err("range", vec![n(0), n(3), n(0)]), err_at(2, "Invalid value for \"step\" parameter: step must not be zero."));
        assert_eq!(
            err("range", vec![n(0), n(3), n(-1)]),
            err_at(1, "Invalid value for \"limit\" parameter: end must be less than start when step is negative.")
        );
        assert_eq!(
            err("range", vec![n(2000)]),
            err_general("more than 1024 values were generated; either decrease the difference between start and end or use a smaller step.")
        );
        assert_eq!(ok("range", vec![n(1024)]).as_list().map(<[Value]>::len), Some(1024));
        assert_eq!(ok("range", vec![n(0), n(i64::MAX), n(i64::MAX / 2 + 1)]), list(vec![n(0), n(i64::MAX / 2 + 1)]));
    }

    #[test]
    fn sum_adds_numbers() {
        assert_eq!(ok("sum", vec![list(vec![n(1), n(2), s("3")])]), n(6));
        assert_eq!(ok("sum", vec![list(vec![n(1), f(0.5)])]), f(1.5));
        assert_eq!(ok("sum", vec![list(vec![f(0.5), f(0.5)])]), n(1));
        assert_eq!(err("sum", vec![list(vec![])]), err_at(0, "Invalid value for \"list\" parameter: cannot sum an empty list."));
    }

    #[test]
    fn zipmap_pairs_keys_and_values() {
        assert_eq!(ok("zipmap", vec![strs(&["a", "b"]), list(vec![n(1), n(2)])]), map(&[("a", n(1)), ("b", n(2))]));
        assert_eq!(err("zipmap", vec![strs(&["a"]), list(vec![])]), err_general("number of keys (1) does not match number of values (0)."));
    }

    #[test]
    fn sort_slice_compact_one() {
        assert_eq!(ok("sort", vec![strs(&["b", "a", "C"])]), strs(&["C", "a", "b"]));
        assert_eq!(ok("sort", vec![list(vec![n(10), n(9)])]), strs(&["10", "9"]));
        assert_eq!(err("sort", vec![list(vec![s("a"), Value::Null])]), err_at(0, "Invalid value for \"list\" parameter: element 1 is null."));
        let l = strs(&["a", "b", "c", "d"]);
        assert_eq!(ok("slice", vec![l.clone(), n(1), n(3)]), strs(&["b", "c"]));
        assert_eq!(ok("slice", vec![l.clone(), n(2), n(2)]), list(vec![]));
        assert_eq!(
            err("slice", vec![l.clone(), n(1), n(5)]),
            err_at(2, "Invalid value for \"end_index\" parameter: end index must not be greater than the length of the list.")
        );
        assert_eq!(
            err("slice", vec![l.clone(), n(3), n(1)]),
            err_at(1, "Invalid value for \"start_index\" parameter: start index must not be greater than end index.")
        );
        assert_eq!(err("slice", vec![l, n(-1), n(1)]), err_at(1, "Invalid value for \"start_index\" parameter: start index must not be less than zero."));
        assert_eq!(ok("compact", vec![list(vec![s("a"), s(""), Value::Null, s("b")])]), strs(&["a", "b"]));
        assert_eq!(ok("one", vec![list(vec![])]), Value::Null);
        assert_eq!(ok("one", vec![strs(&["x"])]), s("x"));
        assert_eq!(
            err("one", vec![strs(&["x", "y"])]),
            err_at(0, "Invalid value for \"list\" parameter: must be a list, set, or tuple value with either zero or one elements.")
        );
    }

    #[test]
    fn alltrue_anytrue() {
        let t = Value::Bool(true);
        let fa = Value::Bool(false);
        assert_eq!(ok("alltrue", vec![list(vec![])]), t);
        assert_eq!(ok("alltrue", vec![list(vec![t.clone(), s("true")])]), t);
        assert_eq!(ok("alltrue", vec![list(vec![t.clone(), Value::Null])]), fa);
        assert_eq!(ok("anytrue", vec![list(vec![])]), fa);
        assert_eq!(ok("anytrue", vec![list(vec![fa.clone(), Value::Null, t.clone()])]), t);
        assert_eq!(err("alltrue", vec![list(vec![n(1)])]), err_at(0, "Invalid value for \"list\" parameter: element 0: a bool is required; got number."));
    }

    #[test]
    fn coalesce_skips_null_and_empty_strings() {
        assert_eq!(ok("coalesce", vec![Value::Null, s(""), s("b"), s("c")]), s("b"));
        assert_eq!(ok("coalesce", vec![Value::Null, n(2), n(3)]), n(2));
        assert_eq!(ok("coalesce", vec![s(""), n(1)]), s("1"));
        assert_eq!(err("coalesce", vec![Value::Null, s("")]), err_general("no non-null, non-empty-string arguments."));
        assert_eq!(err("coalesce", vec![s("a"), strs(&["b"])]), err_general("all arguments must have the same type."));
    }

    #[test]
    fn coalescelist_returns_first_non_empty_list() {
        assert_eq!(ok("coalescelist", vec![list(vec![]), Value::Null, strs(&["a"]), strs(&["b"])]), strs(&["a"]));
        assert_eq!(err("coalescelist", vec![list(vec![]), list(vec![])]), err_general("no non-null arguments."));
        assert_eq!(
            err("coalescelist", vec![s("a")]),
            err_at(0, "Invalid value for \"vals\" parameter: coalescelist arguments must be lists or tuples; got string.")
        );
    }
}

//! The built-in function library of the stack language.
//!
//! Functions follow Terraform's documented behaviour, including its automatic type conversions
//! (numbers and bools become strings where a string is expected, numeric strings become numbers
//! where a number is expected, and so on) and its arity checks. The evaluator deals with unknown
//! values before calling into this module (and with `can` / `try`, which need unevaluated
//! expressions); a function that is handed an unknown value anyway returns an error.
//!
//! Errors carry the index of the offending argument when there is one, so that the caller can
//! point at it in the source; their messages read like Terraform's
//! (`Invalid value for "list" parameter: ...`).
#![deny(clippy::arithmetic_side_effects)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine as _;
use kdeploy_provider::Value;
use sha2::{Digest, Sha256};

/// What a function may need from its surroundings.
pub struct FuncContext<'a> {
    /// The directory that relative paths given to `file()` and `fileexists()` are relative to.
    pub base_dir: &'a Path,
}

/// A failed function call.
#[derive(Debug, Clone, PartialEq)]
pub struct FuncError {
    /// Index of the offending argument, if the failure can be pinned on one.
    pub arg: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for FuncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FuncError {}

type Result<T, E = FuncError> = std::result::Result<T, E>;
type Impl = fn(&Call<'_>) -> Result<Value>;

/// One function: its name, its parameter names (the last one repeats when `max` is `None`) and
/// how many arguments it takes.
struct Spec {
    name: &'static str,
    params: &'static [&'static str],
    min: usize,
    max: Option<usize>,
    imp: Impl,
}

const fn exact(name: &'static str, params: &'static [&'static str], imp: Impl) -> Spec {
    Spec { name, params, min: params.len(), max: Some(params.len()), imp }
}

const fn between(name: &'static str, params: &'static [&'static str], min: usize, imp: Impl) -> Spec {
    Spec { name, params, min, max: Some(params.len()), imp }
}

const fn variadic(name: &'static str, params: &'static [&'static str], min: usize, imp: Impl) -> Spec {
    Spec { name, params, min, max: None, imp }
}

/// Every function, sorted by name (a test checks the order; lookups binary-search it).
static SPECS: &[Spec] = &[
    exact("abs", &["num"], f_abs),
    exact("alltrue", &["list"], f_alltrue),
    exact("anytrue", &["list"], f_anytrue),
    exact("base64decode", &["str"], f_base64decode),
    exact("base64encode", &["str"], f_base64encode),
    exact("ceil", &["num"], f_ceil),
    exact("chomp", &["str"], f_chomp),
    variadic("coalesce", &["vals"], 1, f_coalesce),
    variadic("coalescelist", &["vals"], 1, f_coalescelist),
    exact("compact", &["list"], f_compact),
    variadic("concat", &["seqs"], 1, f_concat),
    exact("contains", &["list", "value"], f_contains),
    exact("distinct", &["list"], f_distinct),
    exact("element", &["list", "index"], f_element),
    exact("endswith", &["str", "suffix"], f_endswith),
    exact("file", &["path"], f_file),
    exact("filebase64", &["path"], f_filebase64),
    exact("fileexists", &["path"], f_fileexists),
    exact("flatten", &["list"], f_flatten),
    exact("floor", &["num"], f_floor),
    variadic("format", &["format", "args"], 1, f_format),
    variadic("formatlist", &["format", "args"], 1, f_formatlist),
    exact("index", &["list", "value"], f_index),
    exact("join", &["separator", "list"], f_join),
    exact("jsondecode", &["str"], f_jsondecode),
    exact("jsonencode", &["val"], f_jsonencode),
    exact("keys", &["inputMap"], f_keys),
    exact("length", &["list"], f_length),
    between("lookup", &["inputMap", "key", "default"], 2, f_lookup),
    exact("lower", &["str"], f_lower),
    variadic("max", &["numbers"], 1, f_max),
    variadic("merge", &["maps"], 0, f_merge),
    variadic("min", &["numbers"], 1, f_min),
    exact("one", &["list"], f_one),
    between("range", &["start", "limit", "step"], 1, f_range),
    exact("replace", &["str", "substr", "replace"], f_replace),
    exact("reverse", &["list"], f_reverse),
    exact("sha256", &["str"], f_sha256),
    exact("slice", &["list", "start_index", "end_index"], f_slice),
    exact("sort", &["list"], f_sort),
    exact("split", &["separator", "str"], f_split),
    exact("startswith", &["str", "prefix"], f_startswith),
    exact("substr", &["str", "offset", "length"], f_substr),
    exact("sum", &["list"], f_sum),
    exact("title", &["str"], f_title),
    exact("tolist", &["v"], f_tolist),
    exact("tomap", &["v"], f_tomap),
    exact("tonumber", &["v"], f_tonumber),
    exact("toset", &["v"], f_toset),
    exact("tostring", &["v"], f_tostring),
    exact("trim", &["str", "cutset"], f_trim),
    exact("trimprefix", &["str", "prefix"], f_trimprefix),
    exact("trimspace", &["str"], f_trimspace),
    exact("trimsuffix", &["str", "suffix"], f_trimsuffix),
    exact("upper", &["str"], f_upper),
    exact("values", &["mapping"], f_values),
    exact("zipmap", &["keyslist", "valueslist"], f_zipmap),
];

fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.binary_search_by(|s| s.name.cmp(name)).ok().map(|i| &SPECS[i])
}

/// Calls the built-in function `name`.
pub fn call(name: &str, args: &[Value], ctx: &FuncContext) -> Result<Value> {
    let Some(spec) = spec(name) else {
        let hint = suggest(name).map(|s| format!(" Did you mean \"{s}\"?")).unwrap_or_default();
        return Err(FuncError { arg: None, message: format!("There is no function named \"{name}\".{hint}") });
    };
    check_arity(spec, args.len())?;
    let call = Call { spec, args, ctx };
    if let Some(i) = args.iter().position(Value::contains_unknown) {
        return Err(call.invalid(i, "the value is not known yet; it will be known after apply"));
    }
    (spec.imp)(&call)
}

/// True when `name` is a built-in function.
pub fn exists(name: &str) -> bool {
    spec(name).is_some()
}

/// The names of all built-in functions, sorted.
pub fn names() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| SPECS.iter().map(|s| s.name).collect()).as_slice()
}

/// The known function closest to `name` (edit distance 1 or 2), for "did you mean" hints.
/// Returns `None` for a known name or when nothing is close enough.
pub fn suggest(name: &str) -> Option<&'static str> {
    if exists(name) {
        return None;
    }
    let lowered = name.to_lowercase();
    if exists(&lowered) {
        return spec(&lowered).map(|s| s.name);
    }
    closest(&lowered, names().iter().copied())
}

fn closest<'n>(target: &str, candidates: impl Iterator<Item = &'n str>) -> Option<&'n str> {
    let limit = 2.min(target.chars().count().saturating_sub(1));
    let mut best: Option<(usize, &str)> = None;
    for cand in candidates {
        let d = crate::diag::edit_distance(target, cand);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, cand));
        }
    }
    best.map(|(_, c)| c)
}

fn check_arity(spec: &Spec, got: usize) -> Result<()> {
    let ok = got >= spec.min && spec.max.is_none_or(|max| got <= max);
    if ok {
        return Ok(());
    }
    let plural = |n: usize| if n == 1 { "argument" } else { "arguments" };
    let expects = match spec.max {
        Some(max) if max == spec.min => format!("{max} {}", plural(max)),
        Some(max) if max == spec.min.saturating_add(1) => format!("{} or {max} arguments", spec.min),
        Some(max) => format!("{} to {max} arguments", spec.min),
        None => format!("at least {} {}", spec.min, plural(spec.min)),
    };
    Err(FuncError { arg: None, message: format!("Function \"{}\" expects {expects}, got {got}.", spec.name) })
}

// ------------------------------------------------------------------------------------------
// Argument access and conversions
// ------------------------------------------------------------------------------------------

struct Call<'a> {
    spec: &'static Spec,
    args: &'a [Value],
    ctx: &'a FuncContext<'a>,
}

/// Adds a final full stop unless the message already ends a sentence.
fn sentence(msg: &str) -> String {
    if msg.ends_with(['.', '?', '!']) { msg.to_string() } else { format!("{msg}.") }
}

fn general(msg: impl AsRef<str>) -> FuncError {
    FuncError { arg: None, message: sentence(msg.as_ref()) }
}

impl Call<'_> {
    fn param(&self, i: usize) -> &'static str {
        let params = self.spec.params;
        params.get(i.min(params.len().saturating_sub(1))).copied().unwrap_or("argument")
    }

    fn invalid(&self, i: usize, msg: impl AsRef<str>) -> FuncError {
        FuncError { arg: Some(i), message: sentence(&format!("Invalid value for \"{}\" parameter: {}", self.param(i), msg.as_ref())) }
    }

    fn arg(&self, i: usize) -> &Value {
        &self.args[i]
    }

    fn not_null(&self, i: usize) -> Result<&Value> {
        match &self.args[i] {
            Value::Null => Err(self.invalid(i, "argument must not be null")),
            v => Ok(v),
        }
    }

    fn str(&self, i: usize) -> Result<String> {
        to_str(self.not_null(i)?).map_err(|m| self.invalid(i, m))
    }

    fn num(&self, i: usize) -> Result<Num> {
        to_num(self.not_null(i)?).map_err(|m| self.invalid(i, m))
    }

    fn int(&self, i: usize) -> Result<i64> {
        let n = self.num(i)?;
        n.as_int().ok_or_else(|| self.invalid(i, format!("must be a whole number; got {n}")))
    }

    fn list(&self, i: usize) -> Result<&[Value]> {
        match self.not_null(i)? {
            Value::List(l) => Ok(l),
            v => Err(self.invalid(i, format!("must be a list; got {}", v.type_name()))),
        }
    }

    fn map(&self, i: usize) -> Result<&BTreeMap<String, Value>> {
        match self.not_null(i)? {
            Value::Map(m) => Ok(m),
            v => Err(self.invalid(i, format!("must be a map; got {}", v.type_name()))),
        }
    }

    /// A list whose elements must all convert to strings.
    fn str_list(&self, i: usize) -> Result<Vec<String>> {
        self.list(i)?
            .iter()
            .enumerate()
            .map(|(n, v)| match v {
                Value::Null => Err(self.invalid(i, format!("element {n} is null"))),
                v => to_str(v).map_err(|m| self.invalid(i, format!("element {n}: {m}"))),
            })
            .collect()
    }
}

/// A number, keeping integers as integers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn of(n: &serde_json::Number) -> Num {
        match n.as_i64() {
            Some(i) => Num::Int(i),
            None => Num::Float(n.as_f64().unwrap_or(f64::NAN)),
        }
    }

    fn f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    fn as_int(self) -> Option<i64> {
        match self {
            Num::Int(i) => Some(i),
            Num::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Some(f as i64),
            Num::Float(_) => None,
        }
    }

    fn value(self) -> Value {
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

fn num_to_string(n: &serde_json::Number) -> String {
    Num::of(n).to_string()
}

/// Converts a primitive to a string the way Terraform does. Errors are bare messages.
fn to_str(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(num_to_string(n)),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Err("argument must not be null".into()),
        v => Err(format!("must be a string; got {}", v.type_name())),
    }
}

fn to_num(v: &Value) -> Result<Num, String> {
    match v {
        Value::Number(n) => Ok(Num::of(n)),
        Value::String(s) => {
            parse_number(s).ok_or_else(|| format!("cannot convert {} to number; given string must be a decimal representation of a number", quote(s)))
        }
        Value::Null => Err("argument must not be null".into()),
        v => Err(format!("a number is required; got {}", v.type_name())),
    }
}

fn to_bool(v: &Value) -> Result<bool, String> {
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
fn parse_number(s: &str) -> Option<Num> {
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

/// A JSON-style quoted string, for messages and `%q`.
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Equality as Terraform sees it: numbers compare by value (`1 == 1.0`).
fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (Num::of(x), Num::of(y)) {
            (Num::Int(x), Num::Int(y)) => x == y,
            (x, y) => x.f64() == y.f64(),
        },
        (Value::List(x), Value::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| values_equal(a, b)),
        (Value::Map(x), Value::Map(y)) => x.len() == y.len() && x.iter().zip(y).all(|((ka, va), (kb, vb))| ka == kb && values_equal(va, vb)),
        _ => a == b,
    }
}

fn dedup(items: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(items.len());
    for item in items {
        if !out.iter().any(|seen| values_equal(seen, &item)) {
            out.push(item);
        }
    }
    out
}

/// Gives a collection's elements a common type the way Terraform's type unification does for
/// primitives: when strings are mixed with numbers or bools, or numbers with bools, everything
/// becomes a string. Mixing primitives with collections, or lists with maps, is an error.
#[allow(clippy::arithmetic_side_effects)] // positions and counts within input already in memory: bounded by its length
fn unify(items: Vec<Value>) -> Result<Vec<Value>, String> {
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

// ------------------------------------------------------------------------------------------
// Collections
// ------------------------------------------------------------------------------------------

fn f_length(c: &Call) -> Result<Value> {
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

fn f_keys(c: &Call) -> Result<Value> {
    let m = c.map(0)?;
    Ok(Value::List(m.keys().map(|k| Value::string(k.clone())).collect()))
}

fn f_values(c: &Call) -> Result<Value> {
    let m = c.map(0)?;
    Ok(Value::List(m.values().cloned().collect()))
}

fn f_lookup(c: &Call) -> Result<Value> {
    let m = c.map(0)?;
    let key = c.str(1)?;
    match m.get(&key) {
        Some(v) => Ok(v.clone()),
        None if c.args.len() == 3 => Ok(c.arg(2).clone()),
        None => Err(c.invalid(1, format!("lookup failed to find key {}", quote(&key)))),
    }
}

fn f_merge(c: &Call) -> Result<Value> {
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

fn f_concat(c: &Call) -> Result<Value> {
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

fn f_contains(c: &Call) -> Result<Value> {
    let list = c.list(0)?;
    let needle = c.arg(1);
    Ok(Value::Bool(list.iter().any(|v| values_equal(v, needle))))
}

fn f_index(c: &Call) -> Result<Value> {
    let list = c.list(0)?;
    let needle = c.arg(1);
    match list.iter().position(|v| values_equal(v, needle)) {
        Some(i) => Ok(Value::from_i64(i as i64)),
        None => Err(c.invalid(1, "item not found")),
    }
}

fn f_element(c: &Call) -> Result<Value> {
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

fn f_flatten(c: &Call) -> Result<Value> {
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

fn f_distinct(c: &Call) -> Result<Value> {
    Ok(Value::List(dedup(c.list(0)?.to_vec())))
}

#[allow(clippy::arithmetic_side_effects)] // at most MAX_RANGE values are generated
fn f_range(c: &Call) -> Result<Value> {
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
        if out.len() >= 1024 {
            return Err(general("more than 1024 values were generated; either decrease the difference between start and end or use a smaller step"));
        }
        out.push(value.value());
        k += 1;
    }
    Ok(Value::List(out))
}

fn f_tolist(c: &Call) -> Result<Value> {
    match c.arg(0) {
        Value::Null => Ok(Value::Null),
        Value::List(l) => Ok(Value::List(unify(l.clone()).map_err(|m| c.invalid(0, m))?)),
        v => Err(c.invalid(0, format!("cannot convert {} to list", v.type_name()))),
    }
}

fn f_toset(c: &Call) -> Result<Value> {
    match c.arg(0) {
        Value::Null => Ok(Value::Null),
        Value::List(l) => Ok(Value::List(dedup(unify(l.clone()).map_err(|m| c.invalid(0, m))?))),
        v => Err(c.invalid(0, format!("cannot convert {} to set", v.type_name()))),
    }
}

fn f_tomap(c: &Call) -> Result<Value> {
    match c.arg(0) {
        Value::Null => Ok(Value::Null),
        Value::Map(m) => {
            let values = unify(m.values().cloned().collect()).map_err(|m| c.invalid(0, m))?;
            Ok(Value::Map(m.keys().cloned().zip(values).collect()))
        }
        v => Err(c.invalid(0, format!("cannot convert {} to map", v.type_name()))),
    }
}

fn f_zipmap(c: &Call) -> Result<Value> {
    let keys = c.str_list(0)?;
    let values = c.list(1)?;
    if keys.len() != values.len() {
        return Err(general(format!("number of keys ({}) does not match number of values ({})", keys.len(), values.len())));
    }
    Ok(Value::Map(keys.into_iter().zip(values.iter().cloned()).collect()))
}

fn f_sort(c: &Call) -> Result<Value> {
    let mut items = c.str_list(0)?;
    items.sort();
    Ok(Value::List(items.into_iter().map(Value::String).collect()))
}

fn f_reverse(c: &Call) -> Result<Value> {
    Ok(Value::List(c.list(0)?.iter().rev().cloned().collect()))
}

fn f_slice(c: &Call) -> Result<Value> {
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

fn f_compact(c: &Call) -> Result<Value> {
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

fn f_one(c: &Call) -> Result<Value> {
    match c.arg(0) {
        Value::List(l) if l.is_empty() => Ok(Value::Null),
        Value::List(l) if l.len() == 1 => Ok(l[0].clone()),
        _ => Err(c.invalid(0, "must be a list, set, or tuple value with either zero or one elements")),
    }
}

fn f_sum(c: &Call) -> Result<Value> {
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

fn f_alltrue(c: &Call) -> Result<Value> {
    Ok(Value::Bool(bool_list(c)?.iter().all(|b| *b == Some(true))))
}

fn f_anytrue(c: &Call) -> Result<Value> {
    Ok(Value::Bool(bool_list(c)?.contains(&Some(true))))
}

fn f_coalesce(c: &Call) -> Result<Value> {
    let unified = unify(c.args.to_vec()).map_err(|_| general("all arguments must have the same type"))?;
    unified.into_iter().find(|v| !v.is_null() && v.as_str() != Some("")).ok_or_else(|| general("no non-null, non-empty-string arguments"))
}

fn f_coalescelist(c: &Call) -> Result<Value> {
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

// ------------------------------------------------------------------------------------------
// Numbers
// ------------------------------------------------------------------------------------------

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

fn f_min(c: &Call) -> Result<Value> {
    extreme(c, false)
}

fn f_max(c: &Call) -> Result<Value> {
    extreme(c, true)
}

fn f_abs(c: &Call) -> Result<Value> {
    Ok(match c.num(0)? {
        Num::Int(i) => match i.checked_abs() {
            Some(a) => Value::from_i64(a),
            None => Value::from_f64((i as f64).abs()),
        },
        Num::Float(f) => Value::from_f64(f.abs()),
    })
}

fn f_ceil(c: &Call) -> Result<Value> {
    Ok(match c.num(0)? {
        Num::Int(i) => Value::from_i64(i),
        Num::Float(f) => Value::from_f64(f.ceil()),
    })
}

fn f_floor(c: &Call) -> Result<Value> {
    Ok(match c.num(0)? {
        Num::Int(i) => Value::from_i64(i),
        Num::Float(f) => Value::from_f64(f.floor()),
    })
}

// ------------------------------------------------------------------------------------------
// Strings
// ------------------------------------------------------------------------------------------

fn f_join(c: &Call) -> Result<Value> {
    let sep = c.str(0)?;
    let list = c.list(1)?;
    let mut parts = Vec::with_capacity(list.len());
    for (n, v) in list.iter().enumerate() {
        let s = match v {
            Value::Null => Err(format!("element {n} is null; cannot concatenate null values")),
            v => to_str(v).map_err(|m| format!("element {n}: {m}")),
        };
        parts.push(s.map_err(|m| c.invalid(1, m))?);
    }
    Ok(Value::String(parts.join(&sep)))
}

fn f_split(c: &Call) -> Result<Value> {
    let sep = c.str(0)?;
    let s = c.str(1)?;
    let parts: Vec<Value> =
        if sep.is_empty() { s.chars().map(|ch| Value::String(ch.to_string())).collect() } else { s.split(sep.as_str()).map(Value::string).collect() };
    Ok(Value::List(parts))
}

fn f_lower(c: &Call) -> Result<Value> {
    Ok(Value::String(c.str(0)?.to_lowercase()))
}

fn f_upper(c: &Call) -> Result<Value> {
    Ok(Value::String(c.str(0)?.to_uppercase()))
}

fn f_replace(c: &Call) -> Result<Value> {
    let s = c.str(0)?;
    let pattern = c.str(1)?;
    let with = c.str(2)?;
    if pattern.len() >= 2 && pattern.starts_with('/') && pattern.ends_with('/') {
        return Err(c.invalid(1, "regular expressions (a pattern wrapped in slashes) are not supported yet; use a plain substring"));
    }
    Ok(Value::String(s.replace(&pattern, &with)))
}

fn f_trimspace(c: &Call) -> Result<Value> {
    Ok(Value::string(c.str(0)?.trim()))
}

fn f_trim(c: &Call) -> Result<Value> {
    let s = c.str(0)?;
    let cutset: Vec<char> = c.str(1)?.chars().collect();
    Ok(Value::string(s.trim_matches(cutset.as_slice())))
}

fn f_trimprefix(c: &Call) -> Result<Value> {
    let s = c.str(0)?;
    let prefix = c.str(1)?;
    Ok(Value::string(s.strip_prefix(prefix.as_str()).unwrap_or(&s)))
}

fn f_trimsuffix(c: &Call) -> Result<Value> {
    let s = c.str(0)?;
    let suffix = c.str(1)?;
    Ok(Value::string(s.strip_suffix(suffix.as_str()).unwrap_or(&s)))
}

fn f_startswith(c: &Call) -> Result<Value> {
    Ok(Value::Bool(c.str(0)?.starts_with(c.str(1)?.as_str())))
}

fn f_endswith(c: &Call) -> Result<Value> {
    Ok(Value::Bool(c.str(0)?.ends_with(c.str(1)?.as_str())))
}

fn f_chomp(c: &Call) -> Result<Value> {
    Ok(Value::string(c.str(0)?.trim_end_matches(['\r', '\n'])))
}

/// Upper-cases the first letter of each word, like Go's `strings.Title`.
fn f_title(c: &Call) -> Result<Value> {
    fn is_separator(ch: char) -> bool {
        if ch.is_ascii() {
            !(ch.is_ascii_alphanumeric() || ch == '_')
        } else if ch.is_alphanumeric() {
            false
        } else {
            ch.is_whitespace()
        }
    }
    let s = c.str(0)?;
    let mut out = String::with_capacity(s.len());
    let mut prev_sep = true;
    for ch in s.chars() {
        if prev_sep {
            out.extend(ch.to_uppercase());
        } else {
            out.push(ch);
        }
        prev_sep = is_separator(ch);
    }
    Ok(Value::String(out))
}

fn f_substr(c: &Call) -> Result<Value> {
    let chars: Vec<char> = c.str(0)?.chars().collect();
    let offset = c.int(1)?;
    let length = c.int(2)?;
    let total = chars.len() as i64;
    let start = if offset < 0 { total.saturating_add(offset).max(0) } else { offset.min(total) };
    let end = if length < 0 { total } else { start.saturating_add(length).min(total) };
    Ok(Value::String(chars[start as usize..end as usize].iter().collect()))
}

fn f_tostring(c: &Call) -> Result<Value> {
    match c.arg(0) {
        Value::Null => Ok(Value::Null),
        v => to_str(v).map(Value::String).map_err(|_| c.invalid(0, format!("cannot convert {} to string", v.type_name()))),
    }
}

fn f_tonumber(c: &Call) -> Result<Value> {
    match c.arg(0) {
        Value::Null => Ok(Value::Null),
        Value::Number(n) => Ok(Num::of(n).value()),
        Value::String(_) => Ok(c.num(0)?.value()),
        v => Err(c.invalid(0, format!("cannot convert {} to number", v.type_name()))),
    }
}

// ------------------------------------------------------------------------------------------
// format and formatlist
// ------------------------------------------------------------------------------------------

fn f_format(c: &Call) -> Result<Value> {
    let fmt = c.str(0)?;
    format_impl(c, &fmt, &c.args[1..]).map(Value::String)
}

#[allow(clippy::arithmetic_side_effects)] // positions and counts within input already in memory: bounded by its length
fn f_formatlist(c: &Call) -> Result<Value> {
    let fmt = c.str(0)?;
    let rest = &c.args[1..];
    let mut len: Option<(usize, usize)> = None; // (length, argument index)
    for (j, arg) in rest.iter().enumerate() {
        if let Value::List(l) = arg {
            match len {
                None => len = Some((l.len(), j + 1)),
                Some((n, first)) if n != l.len() => {
                    return Err(
                        c.invalid(j + 1, format!("argument {} has length {}, which is inconsistent with argument {} of length {}", j + 1, l.len(), first, n))
                    );
                }
                Some(_) => {}
            }
        }
    }
    let n = len.map_or(1, |(n, _)| n);
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let row: Vec<Value> = rest
            .iter()
            .map(|a| match a {
                Value::List(l) => l[k].clone(),
                v => v.clone(),
            })
            .collect();
        out.push(Value::String(format_impl(c, &fmt, &row)?));
    }
    Ok(Value::List(out))
}

/// Bounds widths and precisions so that a typo cannot allocate gigabytes.
const MAX_WIDTH: usize = 10_000;

#[derive(Default)]
struct Flags {
    minus: bool,
    plus: bool,
    space: bool,
    zero: bool,
    sharp: bool,
}

/// Formats `args` (which are the call's arguments from index 1 on) according to `fmt`.
#[allow(clippy::arithmetic_side_effects)] // positions and counts within input already in memory: bounded by its length
fn format_impl(c: &Call, fmt: &str, args: &[Value]) -> Result<String> {
    let chars: Vec<char> = fmt.chars().collect();
    let mut out = String::new();
    let mut next_arg = 0usize;
    let mut used = vec![false; args.len()];
    let mut verbs = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        if ch != '%' {
            out.push(ch);
            i += 1;
            continue;
        }
        let verb_start = i;
        i += 1;
        if chars.get(i) == Some(&'%') {
            out.push('%');
            i += 1;
            continue;
        }
        let mut flags = Flags::default();
        while let Some(&f) = chars.get(i) {
            match f {
                '-' => flags.minus = true,
                '+' => flags.plus = true,
                ' ' => flags.space = true,
                '0' => flags.zero = true,
                '#' => flags.sharp = true,
                _ => break,
            }
            i += 1;
        }
        if chars.get(i) == Some(&'[') {
            let close = chars[i..].iter().position(|&c| c == ']').map(|p| p + i);
            let index = close.and_then(|close| chars[i + 1..close].iter().collect::<String>().parse::<usize>().ok());
            match (close, index) {
                (Some(close), Some(n)) if n >= 1 => {
                    next_arg = n - 1;
                    i = close + 1;
                }
                _ => {
                    return Err(c.invalid(0, format!("invalid argument index in format verb at offset {verb_start}")));
                }
            }
        }
        let width = read_digits(&chars, &mut i);
        let mut precision = None;
        if chars.get(i) == Some(&'.') {
            i += 1;
            precision = Some(read_digits(&chars, &mut i).unwrap_or(0));
        }
        if width.max(precision).is_some_and(|n| n > MAX_WIDTH) {
            return Err(c.invalid(0, format!("width or precision at offset {verb_start} is larger than {MAX_WIDTH}")));
        }
        let Some(&verb) = chars.get(i) else {
            return Err(c.invalid(0, format!("unterminated format verb at offset {verb_start}")));
        };
        i += 1;
        let raw: String = chars[verb_start..i].iter().collect();
        if !"vstqdbxXoeEfgG".contains(verb) {
            return Err(c.invalid(0, format!("unrecognized format character {} at offset {verb_start}", quote(&verb.to_string()))));
        }
        verbs += 1;
        let Some(arg) = args.get(next_arg) else {
            return Err(general(format!(
                "not enough arguments for {} at {verb_start}: need index {} but have {} total",
                quote(&raw),
                next_arg + 1,
                args.len()
            )));
        };
        used[next_arg] = true;
        let arg_index = next_arg + 1; // index among the call's arguments
        next_arg += 1;
        let fail = |msg: String| c.invalid(arg_index, format!("unsupported value for {} at {verb_start}: {msg}", quote(&raw)));
        if arg.is_null() {
            return Err(fail("null value cannot be formatted".into()));
        }
        let spec = VerbSpec { flags: &flags, width, precision };
        let text = format_verb(verb, arg, &spec).map_err(fail)?;
        out.push_str(&text);
    }
    if let Some(unused) = used.iter().position(|u| !u) {
        let msg = if verbs == 0 {
            "too many arguments; no verbs in format string".to_string()
        } else {
            format!("too many arguments; only {} used by format string", used.iter().filter(|u| **u).count())
        };
        return Err(FuncError { arg: Some(unused + 1), message: sentence(&msg) });
    }
    Ok(out)
}

#[allow(clippy::arithmetic_side_effects)] // positions and counts within input already in memory: bounded by its length
fn read_digits(chars: &[char], i: &mut usize) -> Option<usize> {
    let start = *i;
    while chars.get(*i).is_some_and(char::is_ascii_digit) {
        *i += 1;
    }
    (start != *i).then(|| chars[start..*i].iter().collect::<String>().parse().unwrap_or(usize::MAX))
}

struct VerbSpec<'a> {
    flags: &'a Flags,
    width: Option<usize>,
    precision: Option<usize>,
}

fn format_verb(verb: char, arg: &Value, spec: &VerbSpec) -> Result<String, String> {
    let flags = spec.flags;
    match verb {
        'v' if flags.sharp => Ok(pad(&json_encode(arg), spec, false)),
        'v' => {
            let text = match arg {
                Value::List(_) | Value::Map(_) => json_encode(arg),
                Value::Number(n) => return format_number('v', Num::of(n), spec),
                v => to_str(v)?,
            };
            Ok(pad(&text, spec, false))
        }
        's' | 'q' => {
            let s = match arg {
                Value::List(_) | Value::Map(_) => return Err("string required".into()),
                v => to_str(v)?,
            };
            let s = match spec.precision {
                Some(p) => s.chars().take(p).collect(),
                None => s,
            };
            let s = if verb == 'q' { quote(&s) } else { s };
            Ok(pad(&s, spec, false))
        }
        't' => {
            let b = to_bool(arg).map_err(|_| "bool required".to_string())?;
            Ok(pad(&b.to_string(), spec, false))
        }
        _ => {
            let n = to_num(arg).map_err(|_| "number required".to_string())?;
            format_number(verb, n, spec)
        }
    }
}

fn format_number(verb: char, n: Num, spec: &VerbSpec) -> Result<String, String> {
    let flags = spec.flags;
    let negative = n.f64() < 0.0 || (n.f64() == 0.0 && n.f64().is_sign_negative() && verb != 'v');
    let body = match verb {
        'v' => {
            let s = n.to_string();
            s.strip_prefix('-').map(str::to_string).unwrap_or(s)
        }
        'd' | 'b' | 'o' | 'x' | 'X' => {
            let i = n.as_int().ok_or_else(|| format!("{n} is not a whole number"))?;
            let mag = i.unsigned_abs();
            let mut digits = match verb {
                'd' => mag.to_string(),
                'b' => format!("{mag:b}"),
                'o' => format!("{mag:o}"),
                'x' => format!("{mag:x}"),
                _ => format!("{mag:X}"),
            };
            if let Some(p) = spec.precision
                && digits.len() < p
            {
                digits = "0".repeat(p.saturating_sub(digits.len())) + &digits;
            }
            if flags.sharp {
                let prefix = match verb {
                    'b' => "0b",
                    'o' => "0",
                    'x' => "0x",
                    'X' => "0X",
                    _ => "",
                };
                digits = format!("{prefix}{digits}");
            }
            digits
        }
        'f' => format!("{:.*}", spec.precision.unwrap_or(6), n.f64().abs()),
        'e' | 'E' => {
            let s = format_exp(n.f64().abs(), spec.precision.unwrap_or(6));
            if verb == 'E' { s.to_uppercase() } else { s }
        }
        _ => {
            let s = format_general(n.f64().abs(), spec.precision, flags.sharp);
            if verb == 'G' { s.to_uppercase() } else { s }
        }
    };
    let sign = if negative {
        "-"
    } else if flags.plus {
        "+"
    } else if flags.space {
        " "
    } else {
        ""
    };
    Ok(pad(&format!("{sign}{body}"), spec, true))
}

/// Go's `%e`: `d.dddddde±dd`.
fn format_exp(f: f64, precision: usize) -> String {
    let s = format!("{f:.precision$e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

/// Go's `%g`: the shorter of `%e` and `%f`, without trailing zeros.
fn format_general(f: f64, precision: Option<usize>, keep_zeros: bool) -> String {
    if f == 0.0 {
        return "0".into();
    }
    let strip = |s: String| -> String {
        if keep_zeros || !s.contains('.') {
            return s;
        }
        let (mantissa, exp) = match s.split_once('e') {
            Some((m, e)) => (m.to_string(), format!("e{e}")),
            None => (s.clone(), String::new()),
        };
        let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
        format!("{mantissa}{exp}")
    };
    match precision {
        None => {
            let exp = f.abs().log10().floor() as i32;
            if !(-4..21).contains(&exp) {
                // Shortest digits in exponent form.
                let s = format!("{f:e}");
                let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
                let exp: i32 = exp.parse().unwrap_or(0);
                let sign = if exp < 0 { '-' } else { '+' };
                format!("{mantissa}e{sign}{:02}", exp.abs())
            } else {
                format!("{f}")
            }
        }
        Some(p) => {
            let p = p.max(1);
            let e = format!("{f:.*e}", p.saturating_sub(1));
            let exp: i32 = e.split_once('e').and_then(|(_, x)| x.parse().ok()).unwrap_or(0);
            if exp < -4 || exp >= p as i32 {
                strip(format_exp(f, p.saturating_sub(1)))
            } else {
                // p is at most the format precision limit, exp within f64's exponent range.
                let decimals = i64::try_from(p).unwrap_or(i64::MAX).saturating_sub(1).saturating_sub(i64::from(exp)).max(0) as usize;
                strip(format!("{f:.decimals$}"))
            }
        }
    }
}

/// Pads to the verb's width: left-aligned with `-`, with zeros after the sign for numbers with
/// `0`, else with leading spaces.
fn pad(s: &str, spec: &VerbSpec, numeric: bool) -> String {
    let Some(width) = spec.width else {
        return s.to_string();
    };
    let len = s.chars().count();
    if len >= width {
        return s.to_string();
    }
    let fill = width.saturating_sub(len);
    if spec.flags.minus {
        format!("{s}{}", " ".repeat(fill))
    } else if spec.flags.zero && numeric {
        let (sign, digits) = match s.chars().next() {
            Some(c @ ('-' | '+' | ' ')) => (c.to_string(), &s[1..]),
            _ => (String::new(), s),
        };
        format!("{sign}{}{digits}", "0".repeat(fill))
    } else {
        format!("{}{s}", " ".repeat(fill))
    }
}

// ------------------------------------------------------------------------------------------
// Encoding and hashing
// ------------------------------------------------------------------------------------------

/// Compact JSON as Terraform's `jsonencode` writes it: object keys sorted, numbers without
/// exponents, and `<`, `>`, `&`, U+2028 and U+2029 escaped as `\uXXXX`.
fn json_encode(v: &Value) -> String {
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

fn f_jsonencode(c: &Call) -> Result<Value> {
    Ok(Value::String(json_encode(c.arg(0))))
}

fn f_jsondecode(c: &Call) -> Result<Value> {
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

fn f_base64encode(c: &Call) -> Result<Value> {
    Ok(Value::String(base64::engine::general_purpose::STANDARD.encode(c.str(0)?)))
}

fn f_base64decode(c: &Call) -> Result<Value> {
    let s = c.str(0)?;
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(s.as_bytes()).map_err(|e| c.invalid(0, format!("failed to decode base64 data {}: {e}", quote(&s))))?;
    String::from_utf8(bytes).map(Value::String).map_err(|_| c.invalid(0, "the result of decoding the provided string is not valid UTF-8"))
}

fn f_sha256(c: &Call) -> Result<Value> {
    let digest = Sha256::digest(c.str(0)?.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in digest {
        let _ = write!(hex, "{b:02x}");
    }
    Ok(Value::String(hex))
}

// ------------------------------------------------------------------------------------------
// Files
// ------------------------------------------------------------------------------------------

fn resolve(c: &Call, path: &str) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    let p = Path::new(path);
    if p.is_absolute() { p.to_path_buf() } else { c.ctx.base_dir.join(p) }
}

/// Reads a file for `file()` / `filebase64()`.
fn read_file(c: &Call) -> Result<Vec<u8>> {
    let given = c.str(0)?;
    let path = resolve(c, &given);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut msg = format!("no file exists at {} (relative to {})", quote(&given), c.ctx.base_dir.display());
            if let Some(hint) = sibling_hint(&given, &path) {
                let _ = write!(msg, "; did you mean {}?", quote(&hint));
            }
            return Err(c.invalid(0, msg));
        }
        Err(e) => return Err(c.invalid(0, format!("cannot read {}: {e}", quote(&given)))),
    };
    if meta.is_dir() {
        return Err(c.invalid(0, format!("{} is a directory, not a file", quote(&given))));
    }
    crate::files::read(&path, crate::files::FUNCTION_LIMIT).map_err(|e| c.invalid(0, e.0))
}

/// A file next to the missing one whose name is a near miss, spelled the way the user wrote it.
fn sibling_hint(given: &str, path: &Path) -> Option<String> {
    let dir = path.parent()?;
    let name = path.file_name()?.to_str()?;
    let entries: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    let mut sorted = entries;
    sorted.sort();
    let best = closest(name, sorted.iter().map(String::as_str))?;
    let prefix = given.strip_suffix(name)?;
    Some(format!("{prefix}{best}"))
}

fn f_file(c: &Call) -> Result<Value> {
    let bytes = read_file(c)?;
    String::from_utf8(bytes).map(Value::String).map_err(|_| {
        c.invalid(
            0,
            format!(
                "contents of {} are not valid UTF-8; use the filebase64 function to obtain the Base64 encoded contents",
                quote(&c.str(0).unwrap_or_default())
            ),
        )
    })
}

fn f_filebase64(c: &Call) -> Result<Value> {
    Ok(Value::String(base64::engine::general_purpose::STANDARD.encode(read_file(c)?)))
}

fn f_fileexists(c: &Call) -> Result<Value> {
    let given = c.str(0)?;
    let path = resolve(c, &given);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => Err(c.invalid(0, format!("{} is a directory, not a file", quote(&given)))),
        Ok(_) => Ok(Value::Bool(true)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Bool(false)),
        Err(e) => Err(c.invalid(0, format!("cannot stat {}: {e}", quote(&given)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::string(v)
    }
    fn n(i: i64) -> Value {
        Value::from_i64(i)
    }
    fn f(x: f64) -> Value {
        Value::from_f64(x)
    }
    fn list(items: Vec<Value>) -> Value {
        Value::List(items)
    }
    fn strs(items: &[&str]) -> Value {
        Value::List(items.iter().map(|x| s(x)).collect())
    }
    fn map(items: &[(&str, Value)]) -> Value {
        Value::Map(items.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    fn run(name: &str, args: Vec<Value>) -> Result<Value> {
        let ctx = FuncContext { base_dir: Path::new("/nonexistent-base") };
        call(name, &args, &ctx)
    }
    fn ok(name: &str, args: Vec<Value>) -> Value {
        run(name, args).unwrap_or_else(|e| panic!("{name} failed: {}", e.message))
    }
    fn err(name: &str, args: Vec<Value>) -> FuncError {
        match run(name, args) {
            Ok(v) => panic!("{name} unexpectedly returned {}", v.render_inline()),
            Err(e) => e,
        }
    }
    fn err_at(arg: usize, message: &str) -> FuncError {
        FuncError { arg: Some(arg), message: message.to_string() }
    }
    fn err_general(message: &str) -> FuncError {
        FuncError { arg: None, message: message.to_string() }
    }

    /// A scratch directory removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
            let dir = std::env::temp_dir().join(format!("kfuncs-{tag}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    // --- registry ------------------------------------------------------------------------

    #[test]
    fn names_are_sorted_unique_and_resolvable() {
        let all = names();
        assert!(all.windows(2).all(|w| w[0] < w[1]), "SPECS must be sorted by name");
        assert!(all.iter().all(|n| exists(n)));
        assert!(exists("join"));
        assert!(!exists("can"));
        assert!(!exists("try"));
        assert!(!exists("nope"));
        for required in [
            "length",
            "keys",
            "values",
            "lookup",
            "merge",
            "concat",
            "join",
            "split",
            "format",
            "lower",
            "upper",
            "replace",
            "trimspace",
            "tostring",
            "tonumber",
            "file",
            "jsonencode",
            "jsondecode",
            "base64encode",
            "base64decode",
            "sha256",
            "coalesce",
            "contains",
            "element",
            "flatten",
            "distinct",
            "range",
            "min",
            "max",
            "abs",
            "ceil",
            "floor",
            "tolist",
            "toset",
            "tomap",
            "zipmap",
            "substr",
            "startswith",
            "endswith",
            "trim",
            "trimprefix",
            "trimsuffix",
            "title",
            "chomp",
            "sort",
            "reverse",
            "slice",
            "compact",
            "one",
            "sum",
            "alltrue",
            "anytrue",
            "coalescelist",
            "index",
            "fileexists",
            "formatlist",
        ] {
            assert!(exists(required), "{required} is missing");
        }
    }

    #[test]
    fn suggest_finds_typos() {
        assert_eq!(suggest("lenght"), Some("length"));
        assert_eq!(suggest("jion"), Some("join"));
        assert_eq!(suggest("uper"), Some("upper"));
        assert_eq!(suggest("Lower"), Some("lower"));
        assert_eq!(suggest("jsonencod"), Some("jsonencode"));
        assert_eq!(suggest("join"), None);
        assert_eq!(suggest("completelydifferent"), None);
        assert_eq!(suggest("x"), None);
    }

    #[test]
    fn unknown_function_is_an_error_with_a_hint() {
        assert_eq!(err("lenght", vec![s("a")]), err_general("There is no function named \"lenght\". Did you mean \"length\"?"));
    }

    #[test]
    fn arity_errors() {
        assert_eq!(err("join", vec![s(",")]), err_general("Function \"join\" expects 2 arguments, got 1."));
        assert_eq!(err("upper", vec![]), err_general("Function \"upper\" expects 1 argument, got 0."));
        assert_eq!(err("lookup", vec![map(&[])]), err_general("Function \"lookup\" expects 2 or 3 arguments, got 1."));
        assert_eq!(err("range", vec![]), err_general("Function \"range\" expects 1 to 3 arguments, got 0."));
        assert_eq!(err("format", vec![]), err_general("Function \"format\" expects at least 1 argument, got 0."));
        assert_eq!(err("coalesce", vec![]), err_general("Function \"coalesce\" expects at least 1 argument, got 0."));
    }

    #[test]
    fn unknown_arguments_are_rejected_not_panicked_on() {
        assert_eq!(
            err("upper", vec![Value::Unknown("x.y".into())]),
            err_at(0, "Invalid value for \"str\" parameter: the value is not known yet; it will be known after apply.")
        );
        assert_eq!(err("length", vec![list(vec![Value::Unknown("x".into())])]).arg, Some(0));
        assert_eq!(err("format", vec![s("%s"), Value::Unknown("x".into())]).arg, Some(1));
    }

    // --- collections ---------------------------------------------------------------------

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
    fn numbers() {
        assert_eq!(ok("min", vec![n(3), f(1.5), s("2")]), f(1.5));
        assert_eq!(ok("max", vec![n(3), f(1.5), s("12")]), n(12));
        assert_eq!(ok("abs", vec![n(-4)]), n(4));
        assert_eq!(ok("abs", vec![f(-2.5)]), f(2.5));
        assert_eq!(ok("ceil", vec![f(1.2)]), n(2));
        assert_eq!(ok("floor", vec![f(-1.2)]), n(-2));
        assert_eq!(ok("floor", vec![n(7)]), n(7));
        assert_eq!(ok("sum", vec![list(vec![n(1), n(2), s("3")])]), n(6));
        assert_eq!(ok("sum", vec![list(vec![n(1), f(0.5)])]), f(1.5));
        assert_eq!(ok("sum", vec![list(vec![f(0.5), f(0.5)])]), n(1));
        assert_eq!(err("sum", vec![list(vec![])]), err_at(0, "Invalid value for \"list\" parameter: cannot sum an empty list."));
        assert_eq!(err("abs", vec![Value::Bool(true)]), err_at(0, "Invalid value for \"num\" parameter: a number is required; got bool."));
        assert_eq!(
            err("max", vec![n(1), s("x")]),
            err_at(1, "Invalid value for \"numbers\" parameter: cannot convert \"x\" to number; given string must be a decimal representation of a number.")
        );
    }

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

    // --- strings -------------------------------------------------------------------------

    #[test]
    fn split_and_join() {
        assert_eq!(ok("split", vec![s(","), s("a,b,,c")]), strs(&["a", "b", "", "c"]));
        assert_eq!(ok("split", vec![s(","), s("")]), strs(&[""]));
        assert_eq!(ok("split", vec![s(""), s("ab")]), strs(&["a", "b"]));
        assert_eq!(ok("join", vec![s("-"), strs(&["a", "b", "c"])]), s("a-b-c"));
        assert_eq!(ok("join", vec![s(", "), list(vec![s("a"), n(1), Value::Bool(true)])]), s("a, 1, true"));
        assert_eq!(ok("join", vec![s(","), list(vec![])]), s(""));
        let parts = ok("split", vec![s("/"), s("x/y/z")]);
        assert_eq!(ok("join", vec![s("/"), parts]), s("x/y/z"));
        assert_eq!(
            err("join", vec![s(","), list(vec![s("a"), Value::Null])]),
            err_at(1, "Invalid value for \"list\" parameter: element 1 is null; cannot concatenate null values.")
        );
        assert_eq!(err("join", vec![s(","), s("a")]), err_at(1, "Invalid value for \"list\" parameter: must be a list; got string."));
        assert_eq!(err("split", vec![s(","), strs(&["a"])]), err_at(1, "Invalid value for \"str\" parameter: must be a string; got list."));
    }

    #[test]
    fn case_and_trimming() {
        assert_eq!(ok("lower", vec![s("HeLLo ÄÖ")]), s("hello äö"));
        assert_eq!(ok("upper", vec![s("hello äö")]), s("HELLO ÄÖ"));
        assert_eq!(ok("upper", vec![n(12)]), s("12"));
        assert_eq!(ok("trimspace", vec![s("  \t a b\n ")]), s("a b"));
        assert_eq!(ok("trim", vec![s("?!hello?!"), s("!?")]), s("hello"));
        assert_eq!(ok("trimprefix", vec![s("helloworld"), s("hello")]), s("world"));
        assert_eq!(ok("trimprefix", vec![s("helloworld"), s("x")]), s("helloworld"));
        assert_eq!(ok("trimsuffix", vec![s("helloworld"), s("world")]), s("hello"));
        assert_eq!(ok("startswith", vec![s("hello"), s("he")]), Value::Bool(true));
        assert_eq!(ok("endswith", vec![s("hello"), s("he")]), Value::Bool(false));
        assert_eq!(ok("title", vec![s("hello world-wide_web")]), s("Hello World-Wide_web"));
        assert_eq!(ok("chomp", vec![s("hello\r\n\n")]), s("hello"));
        assert_eq!(ok("chomp", vec![s("a\nb")]), s("a\nb"));
        assert_eq!(err("lower", vec![Value::Null]), err_at(0, "Invalid value for \"str\" parameter: argument must not be null."));
    }

    #[test]
    fn replace_plain_substrings_only() {
        assert_eq!(ok("replace", vec![s("1 + 2 + 3"), s("+"), s("-")]), s("1 - 2 - 3"));
        assert_eq!(ok("replace", vec![s("a/b"), s("/"), s("_")]), s("a_b"));
        assert_eq!(
            err("replace", vec![s("abc"), s("/b/"), s("x")]),
            err_at(
                1,
                "Invalid value for \"substr\" parameter: regular expressions (a pattern wrapped in slashes) are not supported yet; use a plain substring."
            )
        );
    }

    #[test]
    fn substr_counts_chars() {
        assert_eq!(ok("substr", vec![s("hello world"), n(1), n(4)]), s("ello"));
        assert_eq!(ok("substr", vec![s("🤔🤷x"), n(0), n(1)]), s("🤔"));
        assert_eq!(ok("substr", vec![s("hello world"), n(-5), n(-1)]), s("world"));
        assert_eq!(ok("substr", vec![s("hello"), n(2), n(-1)]), s("llo"));
        assert_eq!(ok("substr", vec![s("hello"), n(3), n(10)]), s("lo"));
        assert_eq!(ok("substr", vec![s("hello"), n(10), n(1)]), s(""));
        assert_eq!(ok("substr", vec![s("hello"), n(i64::MIN), n(2)]), s("he"));
        assert_eq!(ok("substr", vec![s("hello"), n(1), n(i64::MAX)]), s("ello"));
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

    #[test]
    #[allow(clippy::approx_constant)] // the literals are the point of the test
    fn format_verbs() {
        let fmt = |f: &str, args: Vec<Value>| {
            let mut all = vec![s(f)];
            all.extend(args);
            ok("format", all)
        };
        assert_eq!(fmt("Hello, %s!", vec![s("Ander")]), s("Hello, Ander!"));
        assert_eq!(fmt("%d items", vec![n(42)]), s("42 items"));
        assert_eq!(fmt("%5d|%-5d|%05d", vec![n(42), n(42), n(-42)]), s("   42|42   |-0042"));
        assert_eq!(fmt("%+d", vec![n(3)]), s("+3"));
        assert_eq!(fmt("%f", vec![f(3.14)]), s("3.140000"));
        assert_eq!(fmt("%.2f", vec![f(3.14159)]), s("3.14"));
        assert_eq!(fmt("%05.1f", vec![f(3.14159)]), s("003.1"));
        assert_eq!(fmt("%8.3f|", vec![f(-2.5)]), s("  -2.500|"));
        assert_eq!(fmt("%.0f", vec![n(2)]), s("2"));
        assert_eq!(fmt("%t %t", vec![Value::Bool(true), s("false")]), s("true false"));
        assert_eq!(fmt("%v %v %v", vec![s("x"), n(1), f(2.5)]), s("x 1 2.5"));
        assert_eq!(fmt("%v", vec![list(vec![n(1), s("a")])]), s("[1,\"a\"]"));
        assert_eq!(fmt("%#v", vec![s("x")]), s("\"x\""));
        assert_eq!(fmt("%q", vec![s("say \"hi\"")]), s("\"say \\\"hi\\\"\""));
        assert_eq!(fmt("100%%", vec![]), s("100%"));
        assert_eq!(fmt("%s", vec![n(12)]), s("12"));
        assert_eq!(fmt("%d", vec![s("7")]), s("7"));
        assert_eq!(fmt("%-6s|%6s|%.2s", vec![s("ab"), s("ab"), s("abcdef")]), s("ab    |    ab|ab"));
        assert_eq!(fmt("%x %X %o %b %#x", vec![n(255), n(255), n(8), n(5), n(255)]), s("ff FF 10 101 0xff"));
        assert_eq!(fmt("%e", vec![f(1234.5678)]), s("1.234568e+03"));
        assert_eq!(fmt("%g %g", vec![f(0.5), n(100)]), s("0.5 100"));
        assert_eq!(fmt("%[2]s %[1]s", vec![s("a"), s("b")]), s("b a"));
        assert_eq!(fmt("héllo %s", vec![s("ü")]), s("héllo ü"));
        assert_eq!(fmt("%.3g|%.3g|%g", vec![f(1234.5678), f(0.0001234), f(0.00001)]), s("1.23e+03|0.000123|1e-05"));
        assert_eq!(fmt("%E", vec![f(-0.5)]), s("-5.000000E-01"));
    }

    #[test]
    fn format_errors() {
        assert_eq!(err("format", vec![s("%s %s"), s("a")]), err_general("not enough arguments for \"%s\" at 3: need index 2 but have 1 total."));
        assert_eq!(err("format", vec![s("%s"), s("a"), s("b")]), err_at(2, "too many arguments; only 1 used by format string."));
        assert_eq!(err("format", vec![s("plain"), s("a")]), err_at(1, "too many arguments; no verbs in format string."));
        assert_eq!(
            err("format", vec![s("%d"), f(1.5)]),
            err_at(1, "Invalid value for \"args\" parameter: unsupported value for \"%d\" at 0: 1.5 is not a whole number.")
        );
        assert_eq!(
            err("format", vec![s("%d"), s("x")]),
            err_at(1, "Invalid value for \"args\" parameter: unsupported value for \"%d\" at 0: number required.")
        );
        assert_eq!(
            err("format", vec![s("%s"), Value::Null]),
            err_at(1, "Invalid value for \"args\" parameter: unsupported value for \"%s\" at 0: null value cannot be formatted.")
        );
        assert_eq!(
            err("format", vec![s("%s"), strs(&["a"])]),
            err_at(1, "Invalid value for \"args\" parameter: unsupported value for \"%s\" at 0: string required.")
        );
        assert_eq!(err("format", vec![s("%y"), n(1)]), err_at(0, "Invalid value for \"format\" parameter: unrecognized format character \"y\" at offset 0."));
        assert_eq!(
            err("format", vec![s("%99999999999999999999999d"), n(1)]),
            err_at(0, "Invalid value for \"format\" parameter: width or precision at offset 0 is larger than 10000.")
        );
        assert_eq!(err("format", vec![s("abc %")]), err_at(0, "Invalid value for \"format\" parameter: unterminated format verb at offset 4."));
    }

    #[test]
    fn formatlist_iterates_over_lists() {
        assert_eq!(ok("formatlist", vec![s("Hello, %s! (%s)"), strs(&["Valentina", "Ander"]), s("x")]), strs(&["Hello, Valentina! (x)", "Hello, Ander! (x)"]));
        assert_eq!(ok("formatlist", vec![s("%s=%d"), strs(&["a", "b"]), list(vec![n(1), n(2)])]), strs(&["a=1", "b=2"]));
        assert_eq!(ok("formatlist", vec![s("%s"), s("x")]), strs(&["x"]));
        assert_eq!(ok("formatlist", vec![s("%s"), list(vec![])]), list(vec![]));
        assert_eq!(
            err("formatlist", vec![s("%s%s"), strs(&["a"]), strs(&["a", "b"])]),
            err_at(2, "Invalid value for \"args\" parameter: argument 2 has length 2, which is inconsistent with argument 1 of length 1.")
        );
    }

    // --- encoding ------------------------------------------------------------------------

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
    fn base64_and_sha256() {
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
        assert_eq!(ok("sha256", vec![s("hello world")]), s("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"));
        assert_eq!(ok("sha256", vec![s("")]), s("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    }

    // --- files ---------------------------------------------------------------------------

    #[test]
    fn file_reads_relative_to_base_dir() {
        let tmp = TempDir::new("file");
        std::fs::create_dir_all(tmp.0.join("conf")).unwrap();
        std::fs::write(tmp.0.join("conf/agent.yaml"), "name: agent\n").unwrap();
        std::fs::write(tmp.0.join("bin.dat"), [0xff, 0xfe]).unwrap();
        let ctx = FuncContext { base_dir: &tmp.0 };
        let call_file = |name: &str, path: &str| call(name, &[s(path)], &ctx);

        assert_eq!(call_file("file", "conf/agent.yaml"), Ok(s("name: agent\n")));
        let abs = tmp.0.join("conf/agent.yaml").display().to_string();
        assert_eq!(call_file("file", &abs), Ok(s("name: agent\n")));
        assert_eq!(call_file("fileexists", "conf/agent.yaml"), Ok(Value::Bool(true)));
        assert_eq!(call_file("fileexists", "conf/nope.yaml"), Ok(Value::Bool(false)));
        assert_eq!(call_file("filebase64", "bin.dat"), Ok(s("//4=")));
        // Must not panic on odd paths (the hint logic slices the given path).
        assert!(call_file("file", "xé/.").is_err());
        assert!(call_file("file", "nul\0byte").is_err());

        let base = tmp.0.display();
        assert_eq!(
            call_file("file", "conf/agnet.yaml"),
            Err(err_at(
                0,
                &format!("Invalid value for \"path\" parameter: no file exists at \"conf/agnet.yaml\" (relative to {base}); did you mean \"conf/agent.yaml\"?")
            ))
        );
        assert_eq!(
            call_file("file", "missing.txt"),
            Err(err_at(0, &format!("Invalid value for \"path\" parameter: no file exists at \"missing.txt\" (relative to {base}).")))
        );
        assert_eq!(call_file("file", "conf"), Err(err_at(0, "Invalid value for \"path\" parameter: \"conf\" is a directory, not a file.")));
        assert_eq!(call_file("fileexists", "conf"), Err(err_at(0, "Invalid value for \"path\" parameter: \"conf\" is a directory, not a file.")));
        assert_eq!(
            call_file("file", "bin.dat"),
            Err(err_at(
                0,
                "Invalid value for \"path\" parameter: contents of \"bin.dat\" are not valid UTF-8; use the filebase64 function to obtain the Base64 encoded contents."
            ))
        );
    }
}

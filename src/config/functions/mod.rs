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
//!
//! This file holds what every function shares: the table of functions (name, parameters,
//! arity), the dispatcher, the arity check, "did you mean" suggestions and the argument
//! accessors. The functions themselves are grouped by family, the way OpenTofu's `lang/funcs`
//! is: `collections`, `conversion` (which also holds the implicit conversions the accessors
//! use), `numeric`, `strings`, `format`, `encoding`, `crypto` and `filesystem`. Each family's
//! unit tests sit in its own file and call functions by name, through the dispatcher.
#![deny(clippy::arithmetic_side_effects)]

mod collections;
mod conversion;
mod crypto;
mod encoding;
mod filesystem;
mod format;
mod numeric;
mod strings;
#[cfg(test)]
mod test_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use kdeploy_provider::Value;

use conversion::{to_num, to_str};
use numeric::Num;

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
    exact("abs", &["num"], numeric::f_abs),
    exact("alltrue", &["list"], collections::f_alltrue),
    exact("anytrue", &["list"], collections::f_anytrue),
    exact("base64decode", &["str"], encoding::f_base64decode),
    exact("base64encode", &["str"], encoding::f_base64encode),
    exact("ceil", &["num"], numeric::f_ceil),
    exact("chomp", &["str"], strings::f_chomp),
    variadic("coalesce", &["vals"], 1, collections::f_coalesce),
    variadic("coalescelist", &["vals"], 1, collections::f_coalescelist),
    exact("compact", &["list"], collections::f_compact),
    variadic("concat", &["seqs"], 1, collections::f_concat),
    exact("contains", &["list", "value"], collections::f_contains),
    exact("distinct", &["list"], collections::f_distinct),
    exact("element", &["list", "index"], collections::f_element),
    exact("endswith", &["str", "suffix"], strings::f_endswith),
    exact("file", &["path"], filesystem::f_file),
    exact("filebase64", &["path"], filesystem::f_filebase64),
    exact("fileexists", &["path"], filesystem::f_fileexists),
    exact("flatten", &["list"], collections::f_flatten),
    exact("floor", &["num"], numeric::f_floor),
    variadic("format", &["format", "args"], 1, format::f_format),
    variadic("formatlist", &["format", "args"], 1, format::f_formatlist),
    exact("index", &["list", "value"], collections::f_index),
    exact("join", &["separator", "list"], strings::f_join),
    exact("jsondecode", &["str"], encoding::f_jsondecode),
    exact("jsonencode", &["val"], encoding::f_jsonencode),
    exact("keys", &["inputMap"], collections::f_keys),
    exact("length", &["list"], collections::f_length),
    between("lookup", &["inputMap", "key", "default"], 2, collections::f_lookup),
    exact("lower", &["str"], strings::f_lower),
    variadic("max", &["numbers"], 1, numeric::f_max),
    variadic("merge", &["maps"], 0, collections::f_merge),
    variadic("min", &["numbers"], 1, numeric::f_min),
    exact("one", &["list"], collections::f_one),
    between("range", &["start", "limit", "step"], 1, collections::f_range),
    exact("replace", &["str", "substr", "replace"], strings::f_replace),
    exact("reverse", &["list"], collections::f_reverse),
    exact("sha256", &["str"], crypto::f_sha256),
    exact("slice", &["list", "start_index", "end_index"], collections::f_slice),
    exact("sort", &["list"], collections::f_sort),
    exact("split", &["separator", "str"], strings::f_split),
    exact("startswith", &["str", "prefix"], strings::f_startswith),
    exact("substr", &["str", "offset", "length"], strings::f_substr),
    exact("sum", &["list"], collections::f_sum),
    exact("title", &["str"], strings::f_title),
    exact("tolist", &["v"], conversion::f_tolist),
    exact("tomap", &["v"], conversion::f_tomap),
    exact("tonumber", &["v"], conversion::f_tonumber),
    exact("toset", &["v"], conversion::f_toset),
    exact("tostring", &["v"], conversion::f_tostring),
    exact("trim", &["str", "cutset"], strings::f_trim),
    exact("trimprefix", &["str", "prefix"], strings::f_trimprefix),
    exact("trimspace", &["str"], strings::f_trimspace),
    exact("trimsuffix", &["str", "suffix"], strings::f_trimsuffix),
    exact("upper", &["str"], strings::f_upper),
    exact("values", &["mapping"], collections::f_values),
    exact("zipmap", &["keyslist", "valueslist"], collections::f_zipmap),
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
// Argument access and messages
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

/// A JSON-style quoted string, for messages and `%q`.
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::functions::test_support::*;

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
}

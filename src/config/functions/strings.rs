//! String functions: splitting and joining, case, trimming, `replace`, `substr`. `format` and
//! `formatlist` have their own module.
#![deny(clippy::arithmetic_side_effects)]

use kdeploy_provider::Value;

use super::conversion::to_str;
use super::{Call, Result};

pub(super) fn f_join(c: &Call) -> Result<Value> {
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

pub(super) fn f_split(c: &Call) -> Result<Value> {
    let sep = c.str(0)?;
    let s = c.str(1)?;
    let parts: Vec<Value> =
        if sep.is_empty() { s.chars().map(|ch| Value::String(ch.to_string())).collect() } else { s.split(sep.as_str()).map(Value::string).collect() };
    Ok(Value::List(parts))
}

pub(super) fn f_lower(c: &Call) -> Result<Value> {
    Ok(Value::String(c.str(0)?.to_lowercase()))
}

pub(super) fn f_upper(c: &Call) -> Result<Value> {
    Ok(Value::String(c.str(0)?.to_uppercase()))
}

pub(super) fn f_replace(c: &Call) -> Result<Value> {
    let s = c.str(0)?;
    let pattern = c.str(1)?;
    let with = c.str(2)?;
    if pattern.len() >= 2 && pattern.starts_with('/') && pattern.ends_with('/') {
        return Err(c.invalid(1, "regular expressions (a pattern wrapped in slashes) are not supported yet; use a plain substring"));
    }
    Ok(Value::String(s.replace(&pattern, &with)))
}

pub(super) fn f_trimspace(c: &Call) -> Result<Value> {
    Ok(Value::string(c.str(0)?.trim()))
}

pub(super) fn f_trim(c: &Call) -> Result<Value> {
    let s = c.str(0)?;
    let cutset: Vec<char> = c.str(1)?.chars().collect();
    Ok(Value::string(s.trim_matches(cutset.as_slice())))
}

pub(super) fn f_trimprefix(c: &Call) -> Result<Value> {
    let s = c.str(0)?;
    let prefix = c.str(1)?;
    Ok(Value::string(s.strip_prefix(prefix.as_str()).unwrap_or(&s)))
}

pub(super) fn f_trimsuffix(c: &Call) -> Result<Value> {
    let s = c.str(0)?;
    let suffix = c.str(1)?;
    Ok(Value::string(s.strip_suffix(suffix.as_str()).unwrap_or(&s)))
}

pub(super) fn f_startswith(c: &Call) -> Result<Value> {
    Ok(Value::Bool(c.str(0)?.starts_with(c.str(1)?.as_str())))
}

pub(super) fn f_endswith(c: &Call) -> Result<Value> {
    Ok(Value::Bool(c.str(0)?.ends_with(c.str(1)?.as_str())))
}

pub(super) fn f_chomp(c: &Call) -> Result<Value> {
    Ok(Value::string(c.str(0)?.trim_end_matches(['\r', '\n'])))
}

/// Upper-cases the first letter of each word, like Go's `strings.Title`.
pub(super) fn f_title(c: &Call) -> Result<Value> {
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

pub(super) fn f_substr(c: &Call) -> Result<Value> {
    let chars: Vec<char> = c.str(0)?.chars().collect();
    let offset = c.int(1)?;
    let length = c.int(2)?;
    let total = chars.len() as i64;
    let start = if offset < 0 { total.saturating_add(offset).max(0) } else { offset.min(total) };
    let end = if length < 0 { total } else { start.saturating_add(length).min(total) };
    Ok(Value::String(chars[start as usize..end as usize].iter().collect()))
}

#[cfg(test)]
mod tests {
    use crate::config::functions::test_support::*;

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
}

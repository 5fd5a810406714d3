//! `format` and `formatlist`: Go's `fmt` verbs as Terraform supports them.
#![deny(clippy::arithmetic_side_effects)]

use kdeploy_provider::Value;

use super::conversion::{to_bool, to_num, to_str};
use super::encoding::json_encode;
use super::numeric::Num;
use super::{Call, FuncError, Result, general, quote, sentence};

pub(super) fn f_format(c: &Call) -> Result<Value> {
    let fmt = c.str(0)?;
    format_impl(c, &fmt, &c.args[1..]).map(Value::String)
}

#[allow(clippy::arithmetic_side_effects)] // positions and counts within input already in memory: bounded by its length
pub(super) fn f_formatlist(c: &Call) -> Result<Value> {
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

#[cfg(test)]
mod tests {
    use crate::config::functions::test_support::*;

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
}

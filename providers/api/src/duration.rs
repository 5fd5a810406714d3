//! Durations as users write them, in Go's syntax (the syntax Kubernetes, Helm and Terraform use):
//! `90s`, `1m30s`, `2h`, `1.5h`, `500ms`. One type for the whole code base: component attributes
//! (`readiness_timeout`), backend settings (`lock_ttl`, which also takes bare seconds) and flags
//! (`--lock-timeout`).
//!
//! Parsing is checked: no negative values, no overflow, and at most [`Duration::MAX_SECS`].
#![deny(clippy::arithmetic_side_effects)]

use std::fmt;
use std::str::FromStr;

/// A non-negative span of time with nanosecond precision, at most [`Duration::MAX_SECS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

/// Why a duration could not be parsed; the message names what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}; write e.g. \"90s\", \"1m30s\", \"2h\" or \"500ms\"")]
pub struct DurationError {
    pub input: String,
    pub reason: String,
}

const UNITS: &[(&str, u128)] =
    &[("ns", 1), ("us", 1_000), ("µs", 1_000), ("μs", 1_000), ("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000), ("h", 3_600_000_000_000)];

impl Duration {
    /// The longest duration accepted anywhere: one year. Longer values are mistakes (and would
    /// overflow timers).
    pub const MAX_SECS: u64 = 366 * 24 * 3600;

    pub const fn from_secs(secs: u64) -> Duration {
        Duration(std::time::Duration::from_secs(secs))
    }

    pub const fn from_millis(ms: u64) -> Duration {
        Duration(std::time::Duration::from_millis(ms))
    }

    pub fn as_std(self) -> std::time::Duration {
        self.0
    }

    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }

    /// Go syntax: one or more `<number><unit>` with units ns, us, ms, s, m, h; a lone `0`.
    pub fn parse(input: &str) -> Result<Duration, DurationError> {
        let err = |reason: &str| DurationError { input: input.to_string(), reason: reason.to_string() };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s.starts_with('-') {
            return Err(err("durations cannot be negative"));
        }
        let s = s.strip_prefix('+').unwrap_or(s);
        if s == "0" {
            return Ok(Duration::default());
        }
        let mut rest = s;
        let mut total: u128 = 0;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
            let (number, tail) = rest.split_at(digits);
            if number.is_empty() || number == "." || number.matches('.').count() > 1 {
                return Err(err("expected a number"));
            }
            let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
            let (unit, next) = tail.split_at(unit_len);
            let Some(&(_, scale)) = UNITS.iter().find(|(u, _)| *u == unit) else {
                return Err(match unit.trim() {
                    "" => err("a unit is missing (ns, us, ms, s, m or h)"),
                    u => err(&format!("unknown unit {u:?} (use ns, us, ms, s, m or h, without spaces)")),
                });
            };
            total = total.checked_add(scaled(number, scale).ok_or_else(|| err("it is too long"))?).ok_or_else(|| err("it is too long"))?;
            rest = next;
        }
        if total > u128::from(Duration::MAX_SECS) * 1_000_000_000 {
            return Err(err("it is longer than a year"));
        }
        let secs = u64::try_from(total / 1_000_000_000).map_err(|_| err("it is too long"))?;
        let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| err("it is too long"))?;
        Ok(Duration(std::time::Duration::new(secs, nanos)))
    }

    /// Like [`Duration::parse`], but a bare number means seconds (`"60"`, `"2.5"`): the form
    /// backend settings such as `lock_ttl` have always accepted.
    pub fn parse_or_seconds(input: &str) -> Result<Duration, DurationError> {
        let s = input.trim();
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.') {
            let with_unit = format!("{s}s");
            return Duration::parse(&with_unit).map_err(|e| DurationError { input: input.to_string(), reason: e.reason });
        }
        Duration::parse(input)
    }
}

/// `number` (digits with an optional fraction) times `scale` nanoseconds, exactly for the
/// integer part and truncated below a nanosecond for the fraction.
fn scaled(number: &str, scale: u128) -> Option<u128> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let mut total: u128 = if int.is_empty() { 0 } else { int.parse::<u128>().ok()?.checked_mul(scale)? };
    let mut unit = scale;
    for c in frac.chars().take(18) {
        unit /= 10;
        total = total.checked_add(u128::from(c.to_digit(10)?).checked_mul(unit)?)?;
    }
    Some(total)
}

impl FromStr for Duration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Duration, DurationError> {
        Duration::parse(s)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> std::time::Duration {
        d.0
    }
}

/// Go's canonical form: `1h2m3s`, `1m30s`, `500ms`, `0s`.
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let nanos = self.0.subsec_nanos();
        if secs == 0 {
            return match nanos {
                0 => f.write_str("0s"),
                n if n % 1_000_000 == 0 => write!(f, "{}ms", n / 1_000_000),
                n if n % 1_000 == 0 => write!(f, "{}us", n / 1_000),
                n => write!(f, "{n}ns"),
            };
        }
        let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if h > 0 || m > 0 {
            write!(f, "{m}m")?;
        }
        if nanos == 0 {
            write!(f, "{s}s")
        } else {
            let frac = format!("{nanos:09}");
            write!(f, "{s}.{}s", frac.trim_end_matches('0'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> f64 {
        Duration::parse(s).unwrap().as_std().as_secs_f64()
    }

    #[test]
    fn go_syntax() {
        assert_eq!(secs("90s"), 90.0);
        assert_eq!(secs("1m30s"), 90.0);
        assert_eq!(secs("2h"), 7200.0);
        assert_eq!(secs("1.5h"), 5400.0);
        assert_eq!(secs("500ms"), 0.5);
        assert_eq!(secs("1h2m3s4ms"), 3723.004);
        assert_eq!(secs("0"), 0.0);
        assert_eq!(secs("+5m"), 300.0);
        assert_eq!(secs(" 5m "), 300.0);
        assert_eq!(secs(".5s"), 0.5);
        assert_eq!(Duration::parse("1500us").unwrap(), Duration::parse("1.5ms").unwrap());
    }

    #[test]
    fn rejects_with_a_reason() {
        for (input, reason) in [
            ("", "empty"),
            ("90", "unit is missing"),
            ("5 minutes", "unknown unit"),
            ("-1s", "negative"),
            ("1d", "unknown unit \"d\""),
            ("s", "expected a number"),
            ("1..5s", "expected a number"),
            ("9999h", "longer than a year"),
            ("99999999999999999999h", "longer than a year"),
            ("9999999999999999999999999999999999999999h", "too long"),
            ("1e30s", "unknown unit"),
        ] {
            let e = Duration::parse(input).unwrap_err();
            assert!(e.to_string().contains(reason), "{input:?}: {e}");
            assert!(e.to_string().contains("1m30s"), "says what to write: {e}");
        }
    }

    #[test]
    fn bare_seconds_where_allowed() {
        assert_eq!(Duration::parse_or_seconds("60").unwrap(), Duration::from_secs(60));
        assert_eq!(Duration::parse_or_seconds("2.5").unwrap().as_std().as_secs_f64(), 2.5);
        assert_eq!(Duration::parse_or_seconds("2m").unwrap(), Duration::from_secs(120));
        assert!(Duration::parse_or_seconds("1e30").is_err());
        assert!(Duration::parse_or_seconds("inf").is_err());
        assert!(Duration::parse_or_seconds("99999999999999999999").is_err());
    }

    #[test]
    fn prints_the_canonical_form() {
        for (input, shown) in [("90s", "1m30s"), ("2h", "2h0m0s"), ("500ms", "500ms"), ("1.5s", "1.5s"), ("0", "0s"), ("3723s", "1h2m3s")] {
            assert_eq!(Duration::parse(input).unwrap().to_string(), shown);
            assert_eq!(Duration::parse(shown).unwrap(), Duration::parse(input).unwrap(), "round trip of {shown}");
        }
    }
}

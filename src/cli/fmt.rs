//! `kdeploy fmt`: the canonical layout of stack files — two-space indentation by nesting,
//! `=` aligned across consecutive single-line attributes, no trailing whitespace, one
//! trailing newline. Heredoc bodies and comments are kept byte for byte (the lines inside a
//! multi-line `/* */` included). The result must parse to the same structure, or the file is
//! left untouched; formatting twice changes nothing more.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Formats one file's text.
pub fn format(text: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut depth: usize = 0;
    let mut heredoc: Option<String> = None;
    let mut in_comment = false;
    for raw in text.lines() {
        // Inside a multi-line /* */ comment: kept exactly, up to the line that closes it.
        if in_comment {
            lines.push(raw.to_string());
            in_comment = !raw.contains("*/");
            continue;
        }
        if let Some(end) = &heredoc {
            if raw.trim() == end {
                // The closing marker stays where it was (`<<EOT` needs it at column 0).
                lines.push(raw.trim_end().to_string());
                heredoc = None;
            } else {
                lines.push(raw.to_string());
            }
            continue;
        }
        let t = raw.trim();
        if t.is_empty() {
            if lines.last().is_some_and(|l| l.is_empty()) || lines.is_empty() {
                continue;
            }
            lines.push(String::new());
            continue;
        }
        let Balance { net: opens, leading: closes_first, open_comment } = bracket_balance(t);
        in_comment = open_comment;
        let leading_closes = t.chars().take_while(|c| matches!(c, '}' | ']' | ')')).count();
        let indent = depth.saturating_sub(leading_closes.min(closes_first));
        lines.push(format!("{}{}", "  ".repeat(indent), t));
        depth = (depth as isize + opens).max(0) as usize;
        if let Some(pos) = t.find("<<") {
            let rest = t[pos + 2..].trim_start_matches('-');
            let id: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !id.is_empty() && !in_string(t, pos) {
                heredoc = Some(id);
            }
        }
    }
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    align(&mut lines);
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

fn in_string(line: &str, pos: usize) -> bool {
    line[..pos].chars().filter(|c| *c == '"').count() % 2 == 1
}

/// What a line does to nesting, outside strings and comments.
struct Balance {
    /// Net bracket change.
    net: isize,
    /// How many closers lead the line.
    leading: usize,
    /// The line opens a `/* */` comment that it does not close.
    open_comment: bool,
}

fn bracket_balance(line: &str) -> Balance {
    let mut net = 0isize;
    let mut in_str = false;
    let mut escaped = false;
    let mut interp = 0usize;
    let mut leading = 0usize;
    let mut seen_other = false;
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if in_str {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '$' && chars.get(i + 1) == Some(&'{') {
                interp += 1;
                i += 1;
            } else if c == '}' && interp > 0 {
                interp -= 1;
            } else if c == '"' && interp == 0 {
                in_str = false;
            }
            i += 1;
            continue;
        }
        match c {
            '#' => break,
            '/' if chars.get(i + 1) == Some(&'/') => break,
            '/' if chars.get(i + 1) == Some(&'*') => {
                let rest: String = chars[i + 2..].iter().collect();
                match rest.find("*/") {
                    Some(end) => {
                        i += 2 + rest[..end].chars().count() + 2;
                        continue;
                    }
                    None => return Balance { net, leading, open_comment: true },
                }
            }
            '"' => {
                in_str = true;
                seen_other = true;
            }
            '{' | '[' | '(' => {
                net += 1;
                seen_other = true;
            }
            '}' | ']' | ')' => {
                net -= 1;
                if !seen_other {
                    leading += 1;
                }
            }
            c if !c.is_whitespace() => seen_other = true,
            _ => {}
        }
        i += 1;
    }
    Balance { net, leading, open_comment: false }
}

/// Aligns `=` in runs of consecutive `key = value` lines at the same indentation.
fn align(lines: &mut [String]) {
    let key_of = |l: &str| -> Option<(usize, usize)> {
        let indent = l.len() - l.trim_start().len();
        let t = l.trim_start();
        let key_len = t.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '"'))?;
        if key_len == 0 {
            return None;
        }
        let after = &t[key_len..];
        let eq = after.find('=')?;
        if !after[..eq].trim().is_empty() || after[eq..].starts_with("==") || after[eq..].starts_with("=>") {
            return None;
        }
        Some((indent, key_len))
    };
    let mut i = 0;
    while i < lines.len() {
        let Some((indent, _)) = key_of(&lines[i]) else {
            i += 1;
            continue;
        };
        let mut j = i;
        let mut width = 0;
        while j < lines.len() {
            match key_of(&lines[j]) {
                Some((ind, k)) if ind == indent => {
                    width = width.max(k);
                    j += 1;
                }
                _ => break,
            }
        }
        for l in lines.iter_mut().take(j).skip(i) {
            let indent_s = &l[..indent].to_string();
            let t = l.trim_start().to_string();
            let (_, k) = key_of(l).expect("checked");
            let key = &t[..k];
            let rest = t[k..].trim_start();
            let value = rest[1..].trim_start();
            *l = format!("{indent_s}{key:width$} = {value}");
        }
        i = j.max(i + 1);
    }
}

/// The .hcl and .kdvars files of `dir` (and, `recursive`, of its subdirectories except hidden
/// ones and `target`), sorted.
fn stack_files(dir: &Path, recursive: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if p.extension().is_some_and(|e| e == "hcl" || e == "kdvars") {
            out.push(p);
        } else if recursive && p.is_dir() && !p.is_symlink() && !name.starts_with('.') && name != "target" {
            out.extend(stack_files(&p, true));
        }
    }
    out
}

/// What `kdeploy fmt` does with what it finds.
pub struct Options {
    /// Exit 3 when a file is not formatted.
    pub check: bool,
    /// Print unified diffs.
    pub diff: bool,
    /// Write the formatted files.
    pub write: bool,
    /// Descend into subdirectories.
    pub recursive: bool,
}

/// A unified diff of one file's formatting.
fn unified_diff(shown: &str, before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after).unified_diff().context_radius(3).header(&format!("a/{shown}"), &format!("b/{shown}")).to_string()
}

/// Runs `kdeploy fmt`. Exit 0 when all is formatted (or was rewritten), 3 for `--check` with
/// unformatted files, 1 on errors.
pub fn run(out: &mut dyn Write, err: &mut dyn Write, dir: &Path, options: &Options, files: &[PathBuf]) -> i32 {
    let check = options.check;
    let files: Vec<PathBuf> = if files.is_empty() {
        stack_files(dir, options.recursive)
    } else {
        files.iter().map(|f| if f.is_absolute() { f.clone() } else { dir.join(f) }).collect()
    };
    let mut unformatted = 0;
    let mut failed = false;
    for f in files {
        let shown = f.strip_prefix(dir).unwrap_or(&f).display().to_string();
        let text = match crate::files::read_text(&f, crate::files::SOURCE_LIMIT) {
            Ok(t) => t,
            Err(e) => {
                let _ = writeln!(err, "error: cannot read {shown}: {e}");
                failed = true;
                continue;
            }
        };
        // A file that does not parse is an error, formatted or not (as `terraform fmt`).
        if let Err(e) = hcl_edit::parser::parse_body(&text) {
            let mut sources = crate::diag::SourceMap::new();
            let file = sources.add(&f, shown.clone(), text.clone());
            let d = crate::config::load::syntax_error(file, &text, &e, "The file").hint("fix the syntax at the marked position, then run `kdeploy fmt` again");
            let _ = write!(err, "{}", sources.render(&d, false));
            failed = true;
            continue;
        }
        let formatted = format(&text);
        if formatted == text {
            continue;
        }
        // Formatting changes only white space, and the result must still parse.
        let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        if squash(&text) != squash(&formatted) || hcl_edit::parser::parse_body(&formatted).is_err() {
            let _ = writeln!(err, "warning: {shown} was not formatted: the formatter would change more than white space (please report this)");
            continue;
        }
        unformatted += 1;
        let _ = writeln!(out, "{shown}");
        if options.diff {
            let _ = write!(out, "{}", unified_diff(&shown, &text, &formatted));
        }
        if options.write
            && let Err(e) = std::fs::write(&f, formatted)
        {
            let _ = writeln!(err, "error: cannot write {shown}: {e}");
            failed = true;
        }
    }
    if failed {
        1
    } else if check && unformatted > 0 {
        3
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::format;

    #[test]
    fn indents_and_aligns() {
        let src = "vault \"main\" {\ntype = \"kerberos\"\n    database  = database.main\nenv = {\nA = \"x\"\n  LONGER = \"y\"\n}\n}\n\n\n";
        assert_eq!(
            format(src),
            "vault \"main\" {\n  type     = \"kerberos\"\n  database = database.main\n  env      = {\n    A      = \"x\"\n    LONGER = \"y\"\n  }\n}\n"
        );
    }

    #[test]
    fn aligns_keys_of_different_lengths() {
        let src = "locals {\nx = 1\n    longer_name = \"y\"\n}\n";
        assert_eq!(format(src), "locals {\n  x           = 1\n  longer_name = \"y\"\n}\n");
    }

    #[test]
    fn leaves_heredocs_and_strings_alone() {
        let src = "locals {\n  s = \"{ not a brace\"\n  h = <<EOT\n  keep   this\nEOT\n}\n";
        assert_eq!(format(src), src);
    }
}

//! Diagnostics: collected (never the first one only), each with a stable summary free of user
//! values, a detail that says what and why, an optional hint with the fix, and a source span.
//! Rendering is done here but printing is left to the CLI.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A byte range in one source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub file: FileId,
    pub range: Range<usize>,
}

impl PartialOrd for Span {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Span {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.file, self.range.start, self.range.end).cmp(&(other.file, other.range.start, other.range.end))
    }
}

/// Index of a file in the [`SourceMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId(pub usize);

#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub summary: String,
    pub detail: String,
    pub hint: Option<String>,
    pub span: Option<Span>,
    /// The problem is that a value is unknown. When an earlier error made values unknown (a
    /// rejected variable value), this one only echoes it and is not shown.
    pub from_unknown: bool,
}

impl Diagnostic {
    pub fn error(summary: impl Into<String>, detail: impl Into<String>) -> Diagnostic {
        Diagnostic { severity: Severity::Error, summary: summary.into(), detail: detail.into(), hint: None, span: None, from_unknown: false }
    }

    /// Marks the diagnostic as caused by an unknown value (see [`Diagnostic::from_unknown`]).
    pub fn from_unknown(mut self) -> Diagnostic {
        self.from_unknown = true;
        self
    }

    pub fn warning(summary: impl Into<String>, detail: impl Into<String>) -> Diagnostic {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(summary, detail) }
    }

    pub fn at(mut self, span: Option<Span>) -> Diagnostic {
        self.span = span;
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }
}

/// A collection of diagnostics from one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn new() -> Diagnostics {
        Diagnostics(Vec::new())
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Drops the diagnostics that only say a value is unknown (after an error made it so).
    pub fn without_unknown_echoes(mut self) -> Diagnostics {
        self.0.retain(|d| !d.from_unknown);
        self
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Error)
    }

    /// Sorted by file and position (then by summary), duplicates removed, so output is stable.
    pub fn sorted(mut self) -> Diagnostics {
        self.0.sort_by(|a, b| {
            (a.span.as_ref().map(|s| (s.file, s.range.start)), &a.summary, &a.detail).cmp(&(
                b.span.as_ref().map(|s| (s.file, s.range.start)),
                &b.summary,
                &b.detail,
            ))
        });
        self.0.dedup();
        self
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

/// A 1-based line and column (columns count characters) with the byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
    pub byte: usize,
}

struct SourceFile {
    /// The path as shown to users (relative to the stack directory where possible).
    display: String,
    path: PathBuf,
    text: String,
    line_starts: Vec<usize>,
}

/// Every source file read in a run, so that spans can be turned into file:line:col.
#[derive(Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
    by_path: BTreeMap<PathBuf, FileId>,
}

impl SourceMap {
    pub fn new() -> SourceMap {
        SourceMap::default()
    }

    pub fn add(&mut self, path: &Path, display: String, text: String) -> FileId {
        if let Some(id) = self.by_path.get(path) {
            return *id;
        }
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let id = FileId(self.files.len());
        self.files.push(SourceFile { display, path: path.to_path_buf(), text, line_starts });
        self.by_path.insert(path.to_path_buf(), id);
        id
    }

    pub fn text(&self, id: FileId) -> &str {
        &self.files[id.0].text
    }

    pub fn display(&self, id: FileId) -> &str {
        &self.files[id.0].display
    }

    pub fn path(&self, id: FileId) -> &Path {
        &self.files[id.0].path
    }

    pub fn files(&self) -> impl Iterator<Item = (FileId, &str, &str)> {
        self.files.iter().enumerate().map(|(i, f)| (FileId(i), f.display.as_str(), f.text.as_str()))
    }

    pub fn pos(&self, id: FileId, byte: usize) -> Pos {
        let f = &self.files[id.0];
        let byte = byte.min(f.text.len());
        let line = f.line_starts.partition_point(|&s| s <= byte) - 1;
        let start = f.line_starts[line];
        // Characters before `byte` on its line (a byte inside a character counts that character).
        let column = f.text[start..].char_indices().take_while(|(i, _)| start + i < byte).count() + 1;
        Pos { line: line + 1, column, byte }
    }

    fn line_text(&self, id: FileId, line: usize) -> &str {
        let f = &self.files[id.0];
        let start = f.line_starts[line - 1];
        let end = f.line_starts.get(line).copied().unwrap_or(f.text.len());
        f.text[start..end].trim_end_matches(['\n', '\r'])
    }

    /// A GitHub Actions workflow command (`::error file=F,line=L,col=C,title=SUMMARY::DETAIL`)
    /// that shows the diagnostic on the line it names in a pull request's diff. Paths are made
    /// relative to `base` (the repository root, `GITHUB_WORKSPACE`).
    pub fn github(&self, d: &Diagnostic, base: &Path) -> String {
        let level = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut props = Vec::new();
        if let Some(span) = &d.span {
            let path = self.path(span.file);
            let shown = path.strip_prefix(base).map(|p| p.display().to_string()).unwrap_or_else(|_| self.display(span.file).to_string());
            let start = self.pos(span.file, span.range.start);
            let end = self.pos(span.file, span.range.end);
            props.push(format!("file={}", github_property(&shown)));
            props.push(format!("line={}", start.line));
            props.push(format!("col={}", start.column));
            if end.line > start.line {
                props.push(format!("endLine={}", end.line));
            } else if end.column > start.column {
                props.push(format!("endColumn={}", end.column));
            }
        }
        props.push(format!("title={}", github_property(&d.summary)));
        let mut message = d.detail.clone();
        if let Some(h) = &d.hint {
            message.push_str(&format!("\nHint: {h}"));
        }
        format!("::{level} {}::{}", props.join(","), github_data(&message))
    }

    /// `file:line:col` of a span's start.
    pub fn location(&self, span: &Span) -> String {
        let p = self.pos(span.file, span.range.start);
        format!("{}:{}:{}", self.display(span.file), p.line, p.column)
    }

    /// Renders one diagnostic for humans: summary, location, the source line with a caret under
    /// the span, the detail and the hint.
    pub fn render(&self, d: &Diagnostic, color: bool) -> String {
        let (label, style) = match d.severity {
            Severity::Error => ("error", "\x1b[1;31m"),
            Severity::Warning => ("warning", "\x1b[1;33m"),
        };
        let paint = |s: &str, code: &str| if color { format!("{code}{s}\x1b[0m") } else { s.to_string() };
        let mut out = String::new();
        let _ = writeln!(out, "{}: {}", paint(label, style), paint(&d.summary, "\x1b[1m"));
        if let Some(span) = &d.span {
            let start = self.pos(span.file, span.range.start);
            let end = self.pos(span.file, span.range.end.max(span.range.start));
            let gutter = start.line.to_string().len();
            let pad = " ".repeat(gutter);
            let _ = writeln!(out, "{pad}--> {}:{}:{}", self.display(span.file), start.line, start.column);
            let _ = writeln!(out, "{pad} |");
            let line = self.line_text(span.file, start.line);
            let _ = writeln!(out, "{} | {}", start.line, line.replace('\t', " "));
            let width = if end.line == start.line {
                end.column.saturating_sub(start.column).max(1)
            } else {
                line.chars().count().saturating_sub(start.column - 1).max(1)
            };
            let caret = format!("{}{}", " ".repeat(start.column - 1), "^".repeat(width));
            let _ = writeln!(out, "{pad} | {}", paint(&caret, style));
            for l in d.detail.lines() {
                let _ = writeln!(out, "{pad} = {l}");
            }
            if let Some(h) = &d.hint {
                let _ = writeln!(out, "{pad} = hint: {h}");
            }
        } else {
            for l in d.detail.lines() {
                let _ = writeln!(out, "  {l}");
            }
            if let Some(h) = &d.hint {
                let _ = writeln!(out, "  hint: {h}");
            }
        }
        out
    }

    pub fn render_all(&self, diags: &Diagnostics, color: bool) -> String {
        diags.0.iter().map(|d| self.render(d, color)).collect::<Vec<_>>().join("\n")
    }

    /// Machine-readable form, modelled on `terraform validate -json`.
    pub fn to_json(&self, d: &Diagnostic) -> serde_json::Value {
        let range = d.span.as_ref().map(|s| {
            serde_json::json!({
                "filename": self.display(s.file),
                "start": self.pos(s.file, s.range.start),
                "end": self.pos(s.file, s.range.end),
            })
        });
        let mut v = serde_json::json!({
            "severity": d.severity,
            "summary": d.summary,
            "detail": d.detail,
        });
        if let Some(h) = &d.hint {
            v["hint"] = serde_json::Value::String(h.clone());
        }
        if let Some(r) = range {
            v["range"] = r;
        }
        v
    }
}

/// The closest candidate within a small edit distance, for "did you mean" hints.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates.into_iter().map(|c| (edit_distance(word, c), c)).filter(|(d, _)| *d <= limit).min().map(|(_, c)| c)
}

/// Edit distance where an adjacent transposition counts as one edit (optimal string alignment).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// Escapes a workflow command's message.
fn github_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// Escapes a workflow command's property value.
fn github_property(s: &str) -> String {
    github_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    #[test]
    fn github_workflow_commands_are_escaped() {
        assert_eq!(github_property("a:b,c%d\ne"), "a%3Ab%2Cc%25d%0Ae");
        assert_eq!(github_data("a:b,c\r\n"), "a:b,c%0D%0A");
    }

    use super::*;

    #[test]
    fn renders_location_line_and_caret() {
        let mut sm = SourceMap::new();
        let id = sm.add(Path::new("/s/stack.hcl"), "stack.hcl".into(), "a = 1\nvault \"m\" {\n  database = database.mian\n}\n".into());
        let start = sm.text(id).find("database.mian").unwrap();
        let d = Diagnostic::error("Reference to undeclared component", "database \"mian\" is not declared.")
            .at(Some(Span { file: id, range: start..start + 13 }))
            .hint("did you mean database.main?");
        let out = sm.render(&d, false);
        assert_eq!(
            out,
            "error: Reference to undeclared component\n --> stack.hcl:3:14\n  |\n3 |   database = database.mian\n  |              ^^^^^^^^^^^^^\n  = database \"mian\" is not declared.\n  = hint: did you mean database.main?\n"
        );
        let j = sm.to_json(&d);
        assert_eq!(j["range"]["start"]["line"], 3);
        assert_eq!(j["range"]["start"]["column"], 14);
    }

    #[test]
    fn suggestions_are_close_matches_only() {
        assert_eq!(did_you_mean("mian", ["main", "edge"]), Some("main"));
        assert_eq!(did_you_mean("zzzz", ["main", "edge"]), None);
    }
}

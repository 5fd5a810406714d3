//! Plans as Markdown for pull-request review (`kdeploy plan --format markdown`): a summary
//! table per kind and per cluster, then one collapsible section per component with its
//! attribute diff. Sensitive values are hidden as in the terminal rendering. GitHub limits a
//! comment to 65,536 characters: past [`LIMIT`] the remaining components are listed by address
//! only, with a note.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::render::{self, Style};
use super::{Action, Change, Plan};

/// The most characters the Markdown takes before details are left out (GitHub's comment limit
/// is 65,536; the rest leaves room for a workflow's own header).
pub const LIMIT: usize = 60_000;

/// How many components left out are still named.
const NAMED: usize = 50;

/// Adds, changes (in place), replacements and destroys.
#[derive(Default, Clone, Copy)]
struct Tally {
    add: usize,
    change: usize,
    replace: usize,
    destroy: usize,
}

impl Tally {
    fn count(&mut self, action: Action) {
        match action {
            Action::Create => self.add += 1,
            Action::Update => self.change += 1,
            Action::DeleteThenCreate | Action::CreateThenDelete => self.replace += 1,
            Action::Delete => self.destroy += 1,
            Action::NoOp | Action::Read => {}
        }
    }
}

pub fn markdown(plan: &Plan) -> String {
    markdown_with_limit(plan, LIMIT)
}

/// [`markdown`] with another size limit (tests).
pub fn markdown_with_limit(plan: &Plan, limit: usize) -> String {
    let changes: Vec<&Change> = plan.changes.iter().filter(|c| c.mutates()).collect();
    let outputs = plan.output_changes.iter().filter(|o| o.action != Action::NoOp).count();
    let mut out = String::new();
    let (add, change, destroy) = plan.counts();
    if changes.is_empty() && outputs == 0 {
        let _ = writeln!(out, "### ✅ kdeploy plan: no changes\n\nThe deployment matches the stack.");
        notes(&mut out, plan);
        return out;
    }
    let _ = writeln!(out, "### kdeploy plan: {add} to add, {change} to change, {destroy} to destroy\n");
    notes(&mut out, plan);
    if !changes.is_empty() {
        tables(&mut out, &changes);
    }
    if outputs > 0 {
        let _ = writeln!(out, "Root outputs change: {outputs}.\n");
    }
    details(&mut out, &changes, limit);
    out
}

/// Warnings (a partial plan, interrupted runs) as a quote, so reviewers see them first.
fn notes(out: &mut String, plan: &Plan) {
    for n in &plan.notes {
        let _ = writeln!(out, "> **Warning:** {}\n", n.text.replace('\n', " "));
    }
}

fn tables(out: &mut String, changes: &[&Change]) {
    let mut by_kind: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut by_cluster: BTreeMap<String, Tally> = BTreeMap::new();
    for c in changes {
        by_kind.entry(c.kind.keyword()).or_default().count(c.action);
        let cluster = c.cluster.as_ref().map(|a| format!("`{a}`")).unwrap_or_else(|| "(none)".to_string());
        by_cluster.entry(cluster).or_default().count(c.action);
    }
    table(out, "Kind", by_kind.iter().map(|(k, t)| (k.to_string(), *t)));
    table(out, "Cluster", by_cluster.into_iter());
}

fn table(out: &mut String, what: &str, rows: impl Iterator<Item = (String, Tally)>) {
    let _ = writeln!(out, "| {what} | Add | Change | Replace | Destroy |\n| --- | ---: | ---: | ---: | ---: |");
    for (name, t) in rows {
        let _ = writeln!(out, "| {name} | {} | {} | {} | {} |", t.add, t.change, t.replace, t.destroy);
    }
    out.push('\n');
}

/// One collapsible section per component until `limit`; then the rest by address only.
fn details(out: &mut String, changes: &[&Change], limit: usize) {
    let plain = Style { color: false, ..Style::default() };
    for (i, c) in changes.iter().enumerate() {
        let body = render::change(plain, c);
        let headline = body.lines().next().unwrap_or_default().trim().trim_start_matches("# ").to_string();
        let section = format!("<details><summary>{}</summary>\n\n```\n{}```\n\n</details>\n\n", html_escape(&headline), body.replace("```", "'''"));
        if out.len() + section.len() > limit {
            let left = &changes[i..];
            let mut named: Vec<String> = left.iter().take(NAMED).map(|c| format!("`{}`", c.address)).collect();
            if left.len() > NAMED {
                named.push(format!("and {} more", left.len() - NAMED));
            }
            let _ = writeln!(
                out,
                "_The details of {} more components are left out to stay within the size of a comment; run `kdeploy plan` for the whole plan:_ {}",
                left.len(),
                named.join(", ")
            );
            return;
        }
        out.push_str(&section);
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

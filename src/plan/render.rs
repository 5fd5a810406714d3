//! Human rendering of plans, in Terraform's shape and symbols. Sensitive values are never
//! printed: every value passes through the sensitive paths of its change.

use std::fmt::Write as _;

use kdeploy_provider::{AttrPath, Value};

use super::{Action, Change, Drift, OutputChange, Plan};
use crate::addr::Address;

/// Output style.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    pub color: bool,
    /// `-compact-warnings`: warnings as a list of their summaries.
    pub compact_warnings: bool,
}

/// Warnings in Terraform's compact form (`-compact-warnings`).
pub fn compact_warnings<'a>(style: Style, summaries: impl Iterator<Item = &'a str>) -> String {
    let mut out = format!("{}\n\n", style.paint("Warnings:", "1;33"));
    for s in summaries {
        let _ = writeln!(out, "- {s}");
    }
    out.push_str("\nTo see the full warning notes, run kdeploy without -compact-warnings.\n\n");
    out
}

impl Style {
    fn paint(&self, s: &str, code: &str) -> String {
        if self.color && !code.is_empty() { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_string() }
    }

    fn sym(&self, a: Action) -> String {
        let code = match a {
            Action::Create => "32",
            Action::Delete => "31",
            Action::Update => "33",
            Action::DeleteThenCreate | Action::CreateThenDelete => "35",
            Action::Read => "36",
            Action::NoOp => "",
        };
        self.paint(a.symbol(), code)
    }

    fn bold(&self, s: &str) -> String {
        self.paint(s, "1")
    }
}

fn is_sensitive(path: &AttrPath, sensitive: &[AttrPath]) -> bool {
    sensitive.iter().any(|s| path.starts_with(s))
}

/// Renders a value in one line (or several for maps), with sensitive parts hidden.
fn value_text(v: &Value, path: &AttrPath, sensitive: &[AttrPath], owner: &str, indent: usize) -> String {
    if is_sensitive(path, sensitive) {
        return "(sensitive value)".to_string();
    }
    match v {
        Value::Unknown(origin) => {
            let own = format!("{owner}.{path}");
            if origin.is_empty() || *origin == own { "(known after apply)".into() } else { format!("(known after apply: {origin})") }
        }
        Value::Map(m) if m.is_empty() => "{}".into(),
        Value::Map(m) => {
            let pad = " ".repeat(indent + 4);
            let width = m.keys().map(|k| key_text(k).len()).max().unwrap_or(0);
            let mut out = String::from("{\n");
            for (k, item) in m {
                let _ = writeln!(out, "{pad}{:width$} = {}", key_text(k), value_text(item, &path.child_key(k), sensitive, owner, indent + 4));
            }
            let _ = write!(out, "{}}}", " ".repeat(indent));
            out
        }
        Value::List(items) => {
            let parts: Vec<String> = items.iter().enumerate().map(|(i, item)| value_text(item, &path.child_index(i), sensitive, owner, indent)).collect();
            format!("[{}]", parts.join(", "))
        }
        other => other.render_inline(),
    }
}

fn key_text(k: &str) -> String {
    let ident = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ident { k.to_string() } else { format!("{k:?}") }
}

fn attrs(v: Option<&Value>) -> Vec<(String, Value)> {
    v.and_then(Value::as_map).map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
}

/// One side of a change: its value and which of its paths are sensitive.
#[derive(Clone, Copy)]
struct Side<'a> {
    value: Option<&'a Value>,
    sensitive: &'a [AttrPath],
}

/// The attribute lines of one change: `+ a = 1`, `~ b = 1 -> 2`, `- c = 3 -> null`.
fn attr_lines(style: Style, owner: &str, action: Action, before: Side<'_>, after: Side<'_>, replace_paths: &[AttrPath]) -> String {
    let (before_sensitive, after_sensitive) = (before.sensitive, after.sensitive);
    let (before, after) = (before.value, after.value);
    let mut names: Vec<String> = attrs(before).into_iter().map(|(k, _)| k).chain(attrs(after).into_iter().map(|(k, _)| k)).collect();
    names.sort();
    names.dedup();
    let get = |v: Option<&Value>, k: &str| v.and_then(Value::as_map).and_then(|m| m.get(k)).cloned().unwrap_or(Value::Null);
    let mut rows: Vec<(Action, String, String)> = Vec::new();
    let mut unchanged = 0;
    for name in &names {
        let b = get(before, name);
        let a = get(after, name);
        let p = AttrPath::attr(name);
        let bs = value_text(&b, &p, before_sensitive, owner, 6);
        let as_ = value_text(&a, &p, after_sensitive, owner, 6);
        let forces =
            if replace_paths.iter().any(|r| r.starts_with(&p) || p.starts_with(r)) { style.paint(" # forces replacement", "31") } else { String::new() };
        match action {
            Action::Create => {
                if !a.is_null() {
                    rows.push((Action::Create, name.clone(), format!("{as_}{forces}")));
                }
            }
            Action::Delete => {
                if !b.is_null() {
                    rows.push((Action::Delete, name.clone(), format!("{bs} -> null")));
                }
            }
            _ => {
                let same = a.same_as(&b) && is_sensitive(&p, before_sensitive) == is_sensitive(&p, after_sensitive);
                if same {
                    unchanged += 1;
                } else if b.is_null() {
                    rows.push((Action::Create, name.clone(), format!("{as_}{forces}")));
                } else if a.is_null() {
                    rows.push((Action::Delete, name.clone(), format!("{bs} -> null{forces}")));
                } else {
                    rows.push((Action::Update, name.clone(), format!("{bs} -> {as_}{forces}")));
                }
            }
        }
    }
    let width = rows.iter().map(|(_, n, _)| key_text(n).len()).max().unwrap_or(0);
    let mut out = String::new();
    for (a, name, text) in rows {
        let _ = writeln!(out, "      {} {:width$} = {text}", style.sym(a), key_text(&name));
    }
    if unchanged > 0 {
        let _ = writeln!(out, "        # ({unchanged} unchanged attribute{} hidden)", if unchanged == 1 { "" } else { "s" });
    }
    out
}

fn headline(c: &Change) -> String {
    let addr = &c.address;
    if c.import_id.is_some() {
        match c.action {
            Action::NoOp => return format!("# {addr} will be imported"),
            Action::Update => return format!("# {addr} will be imported and updated in place"),
            _ => {}
        }
    }
    match c.action {
        Action::Create => format!("# {addr} will be created"),
        Action::Update => format!("# {addr} will be updated in place"),
        Action::DeleteThenCreate => format!("# {addr} must be replaced"),
        Action::CreateThenDelete => format!("# {addr} must be replaced (the new one is created first)"),
        Action::Delete => format!("# {addr} will be destroyed"),
        Action::Read => format!("# {addr} will be read during apply"),
        Action::NoOp => format!("# {addr} is up to date"),
    }
}

fn block(style: Style, sym_action: Action, addr: &Address, body: &str) -> String {
    let sym = style.sym(sym_action);
    let pad = if sym_action.symbol().len() == 1 { "  " } else { "" };
    format!("{pad}{sym} {} {{\n{body}    }}\n", style.bold(&addr.to_string()))
}

/// Renders one change.
pub fn change(style: Style, c: &Change) -> String {
    let mut head = headline(c);
    if c.deferred {
        let cluster = c.cluster.as_ref().map(ToString::to_string).unwrap_or_else(|| "its cluster".into());
        head.push_str(&format!(" (deferred until {cluster} exists)"));
    }
    let mut out = format!("  {}\n", style.bold(&head));
    if let Some(id) = &c.import_id {
        let _ = writeln!(out, "  # (imported from {id:?})");
    }
    // A deferred read's headline says why already.
    if let Some(r) = c.reason.filter(|r| *r != super::ActionReason::ReadBecauseDependencyPending) {
        let _ = writeln!(out, "  # (because {})", r.describe());
    }
    if c.action == Action::Delete && c.delete_data {
        let _ = writeln!(out, "  # (its volumes and data are deleted too: --delete-data)");
    }
    let owner = c.address.to_string();
    let before = Side { value: c.before.as_ref(), sensitive: &c.before_sensitive };
    let after = Side { value: c.after.as_ref(), sensitive: &c.after_sensitive };
    let body = attr_lines(style, &owner, c.action, before, after, &c.replace_paths);
    out.push_str(&block(style, c.action, &c.address, &body));
    out
}

/// Renders one drift entry.
pub fn drift(style: Style, d: &Drift) -> String {
    let owner = d.address.to_string();
    match &d.after {
        None => {
            let mut out = format!("  {}\n", style.bold(&format!("# {} has been deleted", d.address)));
            out.push_str(&block(style, Action::Delete, &d.address, ""));
            out
        }
        Some(after) => {
            let mut out = format!("  {}\n", style.bold(&format!("# {} has changed", d.address)));
            let body = attr_lines(
                style,
                &owner,
                Action::Update,
                Side { value: Some(&d.before), sensitive: &d.sensitive },
                Side { value: Some(after), sensitive: &d.sensitive },
                &[],
            );
            out.push_str(&block(style, Action::Update, &d.address, &body));
            out
        }
    }
}

fn output_line(style: Style, o: &OutputChange) -> String {
    let p = AttrPath::root();
    let s: &[AttrPath] = if o.sensitive { std::slice::from_ref(&p) } else { &[] };
    let owner = format!("output.{}", o.name);
    let show = |v: &Option<Value>| v.as_ref().map(|v| value_text(v, &p, s, &owner, 2)).unwrap_or_else(|| "null".into());
    let text = match o.action {
        Action::Create => show(&o.after),
        Action::Delete => format!("{} -> null", show(&o.before)),
        _ => format!("{} -> {}", show(&o.before), show(&o.after)),
    };
    format!("  {} {} = {text}\n", style.sym(o.action), o.name)
}

/// The drift section alone ("Objects have changed outside of kdeploy").
pub fn drift_section(style: Style, plan: &Plan) -> String {
    if plan.drift.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let _ = writeln!(out, "{}\n", style.bold("Note: Objects have changed outside of kdeploy"));
    let _ = writeln!(out, "kdeploy detected the following changes made outside of kdeploy since the last \"kdeploy apply\":\n");
    for d in &plan.drift {
        out.push_str(&drift(style, d));
        out.push('\n');
    }
    out
}

/// The whole plan as `kdeploy plan` prints it.
pub fn plan(style: Style, plan: &Plan) -> String {
    let mut out = String::new();
    if style.compact_warnings && !plan.notes.is_empty() {
        out.push_str(&compact_warnings(style, plan.notes.iter().map(|n| n.summary.as_str())));
    } else {
        for n in &plan.notes {
            let _ = writeln!(out, "{} {n}\n", style.paint("Warning:", "1;33"));
        }
    }
    if let Some(p) = &plan.options.partition {
        let _ = writeln!(
            out,
            "{} {p}: only its components are planned; the other partitions' values are read from their recorded state.\n",
            style.bold("Partition")
        );
    }
    for h in &plan.health {
        let _ = writeln!(out, "{} {h}", style.paint("Status:", "1;36"));
    }
    if !plan.health.is_empty() {
        out.push('\n');
    }
    out.push_str(&drift_section(style, plan));
    let changes: Vec<&Change> = plan.changes.iter().filter(|c| c.shown()).collect();
    let outputs: Vec<&OutputChange> = plan.output_changes.iter().filter(|o| o.action != Action::NoOp).collect();
    if changes.is_empty() && outputs.is_empty() {
        let _ = writeln!(out, "{} Your deployment matches the stack.", style.paint("No changes.", "1;32"));
        if !plan.drift.is_empty() {
            let _ = writeln!(out, "\nThe changes made outside kdeploy need no action; run `kdeploy apply --refresh-only` to record them in state.");
        }
        return out;
    }
    if !changes.is_empty() {
        let used: std::collections::BTreeSet<Action> = changes.iter().map(|c| c.action).collect();
        let _ = writeln!(out, "kdeploy used the selected providers to generate the following plan. Actions are shown with these symbols:");
        for a in [Action::Create, Action::Delete, Action::Update, Action::DeleteThenCreate, Action::CreateThenDelete, Action::Read] {
            if used.contains(&a) {
                let what = match a {
                    Action::Create => "create",
                    Action::Delete => "destroy",
                    Action::Update => "update in-place",
                    Action::DeleteThenCreate => "destroy and then create replacement",
                    Action::CreateThenDelete => "create replacement and then destroy",
                    _ => "read",
                };
                let pad = if a.symbol().len() == 1 { "  " } else { "" };
                let _ = writeln!(out, "{pad}{} {what}", style.sym(a));
            }
        }
        let _ = writeln!(out, "\nkdeploy will perform the following actions:\n");
        for c in &changes {
            out.push_str(&change(style, c));
            out.push('\n');
        }
    }
    let _ = writeln!(out, "{}", summary(style, plan));
    out.push_str(&cluster_summary(plan));
    if !outputs.is_empty() {
        let _ = writeln!(out, "\nChanges to Outputs:");
        for o in outputs {
            out.push_str(&output_line(style, o));
        }
    }
    out
}

/// For a plan that changes more than one cluster (a fleet), one line per cluster:
/// `  cluster.site["north"]: 2 to add, 0 to change, 0 to destroy`.
fn cluster_summary(plan: &Plan) -> String {
    let by_cluster = plan.counts_by_cluster();
    if by_cluster.len() < 2 {
        return String::new();
    }
    let mut out = String::new();
    for (cluster, (add, change, destroy)) in by_cluster {
        let name = cluster.map(|c| c.to_string()).unwrap_or_else(|| "(no cluster)".to_string());
        let _ = writeln!(out, "  {name}: {add} to add, {change} to change, {destroy} to destroy");
    }
    out
}

/// `Plan: X to add, Y to change, Z to destroy.`
pub fn summary(style: Style, plan: &Plan) -> String {
    let (add, change, destroy) = plan.counts();
    let imports = match plan.imports() {
        0 => String::new(),
        n => format!("{n} to import, "),
    };
    let mut line = format!("{} {imports}{add} to add, {change} to change, {destroy} to destroy.", style.bold("Plan:"));
    let deferred = plan.deferred();
    if deferred > 0 {
        line.push_str(&format!(" {deferred} more deferred until their cluster exists."));
    }
    line
}

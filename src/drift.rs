//! Drift reports for the cron: what changed outside kdeploy since the last apply, per
//! component and attribute, after ignore rules; rendered for humans, as JSON (stable schema),
//! or as Markdown for a CI summary, and optionally posted to a webhook.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use kdeploy_provider::{AttrPath, Check, Kind, Value};
use serde_json::{Value as Json, json};

use crate::addr::Address;
use crate::plan::Drift;
use crate::plan::render::Style;

/// Schema version of the JSON report (bumped only on incompatible changes).
pub const REPORT_FORMAT: &str = "1.0";

#[derive(Debug, Clone, PartialEq)]
pub struct AttrDrift {
    pub path: AttrPath,
    pub before: Value,
    pub after: Value,
    pub sensitive: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub address: Address,
    pub kind: Kind,
    /// The cluster the component runs on, as state records it (a cluster: itself).
    pub cluster: Option<Address>,
    pub type_name: String,
    pub provider: String,
    /// `changed`, `deleted`, or `unhealthy` (a health check failed: a Vault account that no
    /// longer answers).
    pub status: &'static str,
    pub attributes: Vec<AttrDrift>,
    /// What an `unhealthy` check said.
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// Components compared with the live systems.
    pub checked: usize,
    pub entries: Vec<Entry>,
    /// Rules that matched something, for transparency.
    pub ignored: Vec<String>,
}

impl Report {
    pub fn drifted(&self) -> bool {
        !self.entries.is_empty()
    }
}

/// Splits `a.b["x.y"].c` into segments, keeping bracketed keys with their segment.
fn segments(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    let mut in_str = false;
    for c in s.chars() {
        match c {
            '"' => in_str = !in_str,
            '[' if !in_str => depth += 1,
            ']' if !in_str => depth -= 1,
            '.' if depth == 0 && !in_str => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    fn m(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len()).any(|i| m(&p[1..], &t[i..])),
            Some(c) => t.first() == Some(c) && m(&p[1..], &t[1..]),
        }
    }
    m(&p, &t)
}

/// Whether an ignore rule (`agent.*.replicas`, `vault.main`, `agent.cam["front"].env`) covers
/// `path` of `address`. A rule that names only components covers all their attributes.
pub fn rule_matches(rule: &str, address: &Address, path: Option<&AttrPath>) -> bool {
    let target = match path {
        Some(p) if !p.is_root() => format!("{address}.{p}"),
        _ => address.to_string(),
    };
    let rs = segments(rule);
    let ts = segments(&target);
    if rs.len() > ts.len() {
        return false;
    }
    // module paths, kinds and names: compare segment by segment; a shorter rule is a prefix.
    // A segment without an index also matches every instance of it (`cam` covers `cam["a"]`).
    rs.iter().zip(&ts).all(|(r, t)| glob(r, t) || (!r.contains('[') && glob(r, t.split('[').next().unwrap_or(t))))
}

/// Builds the report from the refresh's drift entries, dropping what the rules ignore:
/// per component `ignore_changes` (attribute names) and the stack's `drift { ignore = [...] }`.
pub fn report(drift: &[Drift], checked: usize, ignore_changes: &dyn Fn(&Address) -> Vec<String>, stack_rules: &[String], health: &[Check]) -> Report {
    let mut rep = entries(drift, ignore_changes, stack_rules, health);
    rep.checked = checked;
    rep
}

/// [`report`] with the cluster of each entry from `clusters` (address → its cluster, from state).
pub fn report_by_cluster(
    drift: &[Drift],
    checked: usize,
    ignore_changes: &dyn Fn(&Address) -> Vec<String>,
    stack_rules: &[String],
    health: &[Check],
    clusters: &BTreeMap<Address, Address>,
) -> Report {
    let mut rep = report(drift, checked, ignore_changes, stack_rules, health);
    for e in &mut rep.entries {
        e.cluster = if e.kind == Kind::Cluster { Some(e.address.clone()) } else { clusters.get(&e.address).cloned() };
    }
    rep
}

fn entries(drift: &[Drift], ignore_changes: &dyn Fn(&Address) -> Vec<String>, stack_rules: &[String], health: &[Check]) -> Report {
    let mut rep = Report::default();
    for c in health.iter().filter(|c| !c.ok) {
        if let Some(r) = stack_rules.iter().find(|r| rule_matches(r, &c.address, None)) {
            if !rep.ignored.contains(r) {
                rep.ignored.push(r.clone());
            }
            continue;
        }
        let found = drift.iter().find(|d| d.address == c.address);
        let (type_name, provider) = found.map(|d| (d.type_name.clone(), d.provider.clone())).unwrap_or_default();
        rep.entries.push(Entry {
            address: c.address.clone(),
            kind: c.address.kind,
            cluster: None,
            type_name,
            provider,
            status: "unhealthy",
            attributes: Vec::new(),
            message: Some(c.message.clone()),
        });
    }
    for d in drift {
        let address = d.address.clone();
        let lifecycle = ignore_changes(&address);
        let component_ignored = stack_rules.iter().find(|r| rule_matches(r, &address, None) && segments(r).len() <= segments(&address.to_string()).len());
        if let Some(r) = component_ignored {
            if !rep.ignored.contains(r) {
                rep.ignored.push(r.clone());
            }
            continue;
        }
        match &d.after {
            None => rep.entries.push(Entry {
                address,
                kind: d.kind,
                cluster: None,
                type_name: d.type_name.clone(),
                provider: d.provider.clone(),
                status: "deleted",
                attributes: Vec::new(),
                message: None,
            }),
            Some(after) => {
                let mut attrs = Vec::new();
                for p in &d.paths {
                    let top = match p.0.first() {
                        Some(kdeploy_provider::PathStep::Key(k)) => k.clone(),
                        _ => String::new(),
                    };
                    if lifecycle.iter().any(|n| n == "all" || *n == top) {
                        continue;
                    }
                    if let Some(r) = stack_rules.iter().find(|r| rule_matches(r, &address, Some(p))) {
                        if !rep.ignored.contains(r) {
                            rep.ignored.push(r.clone());
                        }
                        continue;
                    }
                    let sensitive = d.sensitive.iter().any(|s| p.starts_with(s));
                    attrs.push(AttrDrift {
                        path: p.clone(),
                        before: d.before.get_path(p).cloned().unwrap_or(Value::Null),
                        after: after.get_path(p).cloned().unwrap_or(Value::Null),
                        sensitive,
                    });
                }
                if !attrs.is_empty() {
                    rep.entries.push(Entry {
                        address,
                        kind: d.kind,
                        cluster: None,
                        type_name: d.type_name.clone(),
                        provider: d.provider.clone(),
                        status: "changed",
                        attributes: attrs,
                        message: None,
                    });
                }
            }
        }
    }
    rep
}

fn shown(v: &Value, sensitive: bool) -> String {
    if sensitive { "(sensitive value)".into() } else { v.render_inline() }
}

/// Human text, grouped by component.
pub fn human(r: &Report, style: Style) -> String {
    let mut out = String::new();
    if !r.drifted() {
        let _ = writeln!(out, "No drift: the {} deployed components match the recorded state.", r.checked);
        return out;
    }
    let bold = |s: &str| if style.color { format!("\x1b[1m{s}\x1b[0m") } else { s.to_string() };
    let _ = writeln!(out, "{}\n", bold(&format!("Drift detected in {} of {} components:", r.entries.len(), r.checked)));
    // A fleet's drift reads per site: grouped by cluster when it spans several.
    let clusters: std::collections::BTreeSet<Option<&Address>> = r.entries.iter().map(|e| e.cluster.as_ref()).collect();
    let mut entries: Vec<&Entry> = r.entries.iter().collect();
    let grouped = clusters.len() > 1;
    if grouped {
        entries.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    }
    let mut current: Option<Option<&Address>> = None;
    for e in entries {
        if grouped && current != Some(e.cluster.as_ref()) {
            current = Some(e.cluster.as_ref());
            let name = e.cluster.as_ref().map(|c| c.to_string()).unwrap_or_else(|| "no cluster".to_string());
            let _ = writeln!(out, "{}", bold(&format!("On {name}:")));
        }
        match e.status {
            "deleted" => {
                let _ = writeln!(out, "  {} ({} {}): deleted outside kdeploy", bold(&e.address.to_string()), e.kind, e.type_name);
            }
            "unhealthy" => {
                let _ = writeln!(out, "  {}: unhealthy: {}", bold(&e.address.to_string()), e.message.as_deref().unwrap_or_default());
            }
            _ => {
                let _ = writeln!(out, "  {} ({} {}): changed outside kdeploy", bold(&e.address.to_string()), e.kind, e.type_name);
                for a in &e.attributes {
                    let _ = writeln!(out, "      ~ {} = {} -> {}", a.path, shown(&a.before, a.sensitive), shown(&a.after, a.sensitive));
                }
            }
        }
    }
    let _ = writeln!(out, "\nRun `kdeploy plan` to see how apply would restore them, or `kdeploy apply --refresh-only` to accept the live values.");
    out
}

fn value_json(v: &Value, sensitive: bool) -> Json {
    if sensitive { Json::Null } else { v.to_json() }
}

/// The stable JSON report (documented in README).
pub fn to_json(r: &Report) -> Json {
    let count = |status: &str| r.entries.iter().filter(|e| e.status == status).count();
    json!({
        "format_version": REPORT_FORMAT,
        "drifted": r.drifted(),
        "summary": {"checked": r.checked, "drifted": r.entries.len(), "changed": count("changed"), "deleted": count("deleted"), "unhealthy": count("unhealthy")},
        "drift": r.entries.iter().map(|e| json!({
            "address": e.address,
            "kind": e.kind,
            "cluster": e.cluster,
            "type": e.type_name,
            "provider": e.provider,
            "status": e.status,
            "message": e.message,
            "attributes": e.attributes.iter().map(|a| json!({
                "path": a.path.to_string(),
                "path_steps": a.path,
                "before": value_json(&a.before, a.sensitive),
                "after": value_json(&a.after, a.sensitive),
                "sensitive": a.sensitive,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "ignored_rules": r.ignored,
    })
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('`', "'")
}

/// Markdown for a CI job summary or a pull-request comment.
pub fn markdown(r: &Report) -> String {
    let mut out = String::new();
    if !r.drifted() {
        let _ = writeln!(out, "### ✅ No drift\n\nAll {} deployed components match the recorded state.", r.checked);
        return out;
    }
    let _ = writeln!(out, "### ⚠️ Drift detected in {} of {} components\n", r.entries.len(), r.checked);
    let _ = writeln!(out, "| Component | Status | Attribute | Recorded | Live |\n| --- | --- | --- | --- | --- |");
    for e in &r.entries {
        if e.attributes.is_empty() {
            match &e.message {
                Some(m) => {
                    let _ = writeln!(out, "| `{}` | {} | {} | | |", md_escape(&e.address.to_string()), e.status, md_escape(m));
                }
                None => {
                    let _ = writeln!(out, "| `{}` | {} | | | |", md_escape(&e.address.to_string()), e.status);
                }
            }
        }
        for a in &e.attributes {
            let _ = writeln!(
                out,
                "| `{}` | {} | `{}` | {} | {} |",
                md_escape(&e.address.to_string()),
                e.status,
                md_escape(&a.path.to_string()),
                md_escape(&shown(&a.before, a.sensitive)),
                md_escape(&shown(&a.after, a.sensitive))
            );
        }
    }
    let _ = writeln!(out, "\nRun `kdeploy plan` to review how apply would restore them.");
    out
}

/// Posts the report to a webhook: the JSON report plus a Slack-compatible `text` field. Retries
/// up to 3 times with backoff on network errors and 5xx/429; each attempt times out.
pub async fn notify(url: &str, r: &Report, timeout: Duration) -> Result<(), String> {
    let mut body = to_json(r);
    let text = format!(
        "kdeploy: drift detected in {} of {} components: {}",
        r.entries.len(),
        r.checked,
        r.entries.iter().map(|e| format!("{} ({})", e.address, e.status)).collect::<Vec<_>>().join(", ")
    );
    body["text"] = Json::String(text);
    let client = reqwest::Client::builder().timeout(timeout).build().map_err(|e| e.to_string())?;
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt))).await;
        }
        match client.post(url).json(&body).send().await {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) if resp.status().is_server_error() || resp.status().as_u16() == 429 => last = format!("the webhook answered {}", resp.status()),
            Ok(resp) => return Err(format!("the webhook answered {} (not retried)", resp.status())),
            // The URL may carry a token (Slack webhooks do): never print it.
            Err(e) => last = if e.is_timeout() { format!("no answer within {}s", timeout.as_secs()) } else { e.without_url().to_string() },
        }
    }
    Err(format!("{last} (after 3 attempts)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_components_and_attributes() {
        let p = AttrPath::attr("replicas");
        assert!(rule_matches("agent.*.replicas", &"agent.cam[\"front\"]".parse().unwrap(), Some(&p)));
        assert!(rule_matches("agent.*", &"agent.cam[\"front\"]".parse().unwrap(), None));
        assert!(rule_matches("agent.cam", &"agent.cam[\"front\"]".parse().unwrap(), Some(&p)), "a block covers its instances");
        assert!(!rule_matches("vault.*.replicas", &"agent.cam[\"front\"]".parse().unwrap(), Some(&p)));
        assert!(!rule_matches("agent.*.image", &"agent.cam[\"front\"]".parse().unwrap(), Some(&p)));
        assert!(rule_matches("agent.cam[\"front\"].env", &"agent.cam[\"front\"]".parse().unwrap(), Some(&AttrPath::attr("env").child_key("A"))));
    }
}

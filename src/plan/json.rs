//! Machine-readable plans, modelled on `terraform show -json`. Sensitive values are never
//! included: they are replaced with null and flagged in `before_sensitive`/`after_sensitive`.

use kdeploy_provider::value::sensitive_mask;
use kdeploy_provider::{AttrPath, PathStep, Value};
use serde_json::{Map, Value as Json, json};

use super::{Change, Drift, Plan};
use crate::addr::{Address, InstanceKey};

/// A JSON value with every sensitive path replaced by null. Unknowns become null too (see
/// `after_unknown`).
pub fn redacted(v: &Value, sensitive: &[AttrPath]) -> Json {
    fn walk(v: &Value, path: &mut Vec<PathStep>, sensitive: &[AttrPath]) -> Json {
        let here = AttrPath(path.clone());
        if sensitive.iter().any(|s| here.starts_with(s)) {
            return Json::Null;
        }
        match v {
            Value::Map(m) => {
                let mut out = Map::new();
                for (k, item) in m {
                    path.push(PathStep::Key(k.clone()));
                    out.insert(k.clone(), walk(item, path, sensitive));
                    path.pop();
                }
                Json::Object(out)
            }
            Value::List(l) => {
                let mut out = Vec::new();
                for (i, item) in l.iter().enumerate() {
                    path.push(PathStep::Index(i));
                    out.push(walk(item, path, sensitive));
                    path.pop();
                }
                Json::Array(out)
            }
            other => other.to_json(),
        }
    }
    walk(v, &mut Vec::new(), sensitive)
}

fn address_fields(a: &Address) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert("address".into(), json!(a.to_string()));
    if !a.module.is_root() {
        m.insert("module_address".into(), json!(a.module.to_string()));
    }
    m.insert("kind".into(), json!(a.kind.keyword()));
    m.insert("name".into(), json!(a.name));
    if let Some(k) = &a.key {
        m.insert(
            "index".into(),
            match k {
                InstanceKey::Int(n) => json!(n),
                InstanceKey::Str(s) => json!(s),
            },
        );
    }
    m
}

fn opt(v: &Option<Value>, s: &[AttrPath]) -> Json {
    v.as_ref().map(|v| redacted(v, s)).unwrap_or(Json::Null)
}

fn unknown_mask(v: &Option<Value>) -> Json {
    match v {
        Some(v) => match v.unknown_mask() {
            Json::Bool(false) => json!({}),
            other => other,
        },
        None => json!({}),
    }
}

fn paths_json(paths: &[AttrPath]) -> Json {
    Json::Array(paths.iter().map(|p| serde_json::to_value(p).unwrap_or(Json::Null)).collect())
}

pub fn change_json(c: &Change) -> Json {
    let mut m = address_fields(&c.address);
    m.insert("type".into(), json!(c.type_name));
    m.insert("provider_name".into(), json!(c.provider));
    m.insert(
        "change".into(),
        json!({
            "actions": c.action.json_actions(),
            "before": opt(&c.before, &c.before_sensitive),
            "after": opt(&c.after, &c.after_sensitive),
            "after_unknown": unknown_mask(&c.after),
            "before_sensitive": if c.before.is_some() { sensitive_mask(&c.before_sensitive) } else { json!(false) },
            "after_sensitive": if c.after.is_some() { sensitive_mask(&c.after_sensitive) } else { json!(false) },
            "replace_paths": paths_json(&c.replace_paths),
        }),
    );
    if let (Some(id), Some(Json::Object(change))) = (&c.import_id, m.get_mut("change")) {
        // As `terraform show -json` writes it.
        change.insert("importing".into(), json!({"id": id}));
    }
    if let Some(r) = c.reason {
        m.insert("action_reason".into(), json!(r.json_name()));
    }
    if c.deferred {
        m.insert("deferred".into(), json!(true));
    }
    if !c.depends_on.is_empty() {
        m.insert("depends_on".into(), json!(c.depends_on.iter().map(ToString::to_string).collect::<Vec<_>>()));
    }
    Json::Object(m)
}

pub fn drift_json(d: &Drift) -> Json {
    let mut m = address_fields(&d.address);
    m.insert("type".into(), json!(d.type_name));
    m.insert("provider_name".into(), json!(d.provider));
    let actions = if d.after.is_some() { vec!["update"] } else { vec!["delete"] };
    m.insert(
        "change".into(),
        json!({
            "actions": actions,
            "before": redacted(&d.before, &d.sensitive),
            "after": d.after.as_ref().map(|a| redacted(a, &d.sensitive)).unwrap_or(Json::Null),
            "before_sensitive": sensitive_mask(&d.sensitive),
            "after_sensitive": if d.after.is_some() { sensitive_mask(&d.sensitive) } else { json!(false) },
            "changed_paths": paths_json(&d.paths),
        }),
    );
    Json::Object(m)
}

/// The whole plan, as `kdeploy plan --json` and `kdeploy show --json PLANFILE` print it.
pub fn plan_json(plan: &Plan) -> Json {
    let mut outputs = Map::new();
    for o in &plan.output_changes {
        let s: Vec<AttrPath> = if o.sensitive { vec![AttrPath::root()] } else { vec![] };
        outputs.insert(
            o.name.clone(),
            json!({
                "actions": o.action.json_actions(),
                "before": opt(&o.before, &s),
                "after": opt(&o.after, &s),
                "after_unknown": o.after.as_ref().is_some_and(Value::contains_unknown),
                "before_sensitive": o.sensitive,
                "after_sensitive": o.sensitive,
            }),
        );
    }
    let (add, change, destroy) = plan.counts();
    json!({
        "format_version": super::PLAN_FORMAT_VERSION,
        "kdeploy_version": plan.kdeploy_version,
        "lineage": plan.lineage,
        "serial": plan.serial,
        "destroy": plan.options.destroy,
        // As Terraform: a data source read at plan is in no change list.
        "resource_changes": plan.changes.iter().filter(|c| c.action != super::Action::Read || c.shown()).map(change_json).collect::<Vec<_>>(),
        "resource_drift": plan.drift.iter().map(drift_json).collect::<Vec<_>>(),
        "output_changes": outputs,
        "summary": {"import": plan.imports(), "add": add, "change": change, "destroy": destroy, "deferred": plan.deferred(), "has_changes": plan.has_changes(), "drift": plan.drift.len()},
        "notes": plan.notes,
        "health": plan.health,
        "errored": false,
    })
}

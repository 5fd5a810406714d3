//! `kdeploy show` (a saved plan or the state) and `kdeploy output`.

use super::*;

pub(super) fn show(ctx: &mut Ctx<'_, '_>, file: Option<&Path>, json: bool) -> i32 {
    if let Some(file) = file {
        let path = ctx.path(file);
        return match planfile::load(&path) {
            Ok(plan) => {
                if json {
                    let _ = writeln!(ctx.io.out, "{}", serde_json::to_string_pretty(&plan_json(&plan)).unwrap_or_default());
                } else {
                    let _ = write!(ctx.io.out, "{}", render::plan(ctx.style, &plan));
                }
                EXIT_OK
            }
            Err(e) => {
                ctx.error("Cannot read plan", &e.to_string());
                EXIT_ERROR
            }
        };
    }
    let state = match read_state(ctx) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let Some(state) = state else {
        if json {
            let _ = writeln!(ctx.io.out, "{}", json!({"format_version": "1.0", "values": null}));
        } else {
            let _ = writeln!(ctx.io.out, "No state.");
        }
        return EXIT_OK;
    };
    if json {
        let resources: Vec<_> = state
            .resources
            .iter()
            .map(|r| {
                json!({
                    "address": r.address, "kind": r.kind, "type": r.type_name, "provider_name": r.provider,
                    "values": redacted(&kdeploy_provider::Value::from_json(&r.attributes), &r.sensitive_paths),
                    "sensitive_values": kdeploy_provider::value::sensitive_mask(&r.sensitive_paths),
                    "depends_on": r.dependencies,
                })
            })
            .collect();
        let outputs: serde_json::Map<String, serde_json::Value> = state
            .outputs
            .iter()
            .map(|(k, o)| (k.clone(), json!({"sensitive": o.sensitive, "value": if o.sensitive { serde_json::Value::Null } else { o.value.clone() }})))
            .collect();
        let _ = writeln!(
            ctx.io.out,
            "{}",
            serde_json::to_string_pretty(&json!({"format_version": "1.0", "kdeploy_version": state.kdeploy_version, "serial": state.serial, "lineage": state.lineage, "values": {"outputs": outputs, "resources": resources}})).unwrap_or_default()
        );
        return EXIT_OK;
    }
    for r in &state.resources {
        let _ = write!(ctx.io.out, "{}", state_resource_text(r));
    }
    if !state.outputs.is_empty() {
        let _ = writeln!(ctx.io.out, "Outputs:\n");
        for (k, o) in &state.outputs {
            let _ = writeln!(ctx.io.out, "{k} = {}", output_text(o));
        }
    }
    EXIT_OK
}

pub(super) fn output_text(o: &kdeploy_state::OutputState) -> String {
    if o.sensitive { "<sensitive>".into() } else { kdeploy_provider::Value::from_json(&o.value).render_inline() }
}

pub(super) fn state_resource_text(r: &kdeploy_state::ResourceState) -> String {
    let v = redacted(&kdeploy_provider::Value::from_json(&r.attributes), &r.sensitive_paths);
    let mut out = format!("# {}: type {:?}, provider {}\n{} {{\n", r.address, r.type_name, r.provider, r.address);
    if let Some(m) = v.as_object() {
        let width = m.keys().map(String::len).max().unwrap_or(0);
        for (k, val) in m {
            let shown =
                if r.sensitive_paths.iter().any(|p| *p == kdeploy_provider::AttrPath::attr(k)) { "(sensitive value)".to_string() } else { val.to_string() };
            out.push_str(&format!("    {k:width$} = {shown}\n"));
        }
    }
    out.push_str("}\n\n");
    out
}

pub(super) fn output(ctx: &mut Ctx<'_, '_>, name: Option<&str>, json: bool, raw: bool) -> i32 {
    let state = match read_state(ctx) {
        Ok(s) => s.unwrap_or_else(|| State::new(VERSION)),
        Err(c) => return c,
    };
    match name {
        Some(n) => {
            let Some(o) = state.outputs.get(n) else {
                ctx.error(
                    "Output not found",
                    &format!("The state has no output named {n:?}. Outputs are recorded by `kdeploy apply`; `kdeploy output` lists them."),
                );
                return EXIT_ERROR;
            };
            if json {
                let _ = writeln!(ctx.io.out, "{}", o.value);
            } else if raw {
                match &o.value {
                    serde_json::Value::String(s) => {
                        let _ = write!(ctx.io.out, "{s}");
                    }
                    other => {
                        let _ = writeln!(ctx.io.out, "{other}");
                    }
                }
            } else {
                let _ = writeln!(ctx.io.out, "{}", kdeploy_provider::Value::from_json(&o.value).render_inline());
            }
            EXIT_OK
        }
        None => {
            if json {
                let m: serde_json::Map<String, serde_json::Value> = state
                    .outputs
                    .iter()
                    .map(|(k, o)| (k.clone(), json!({"sensitive": o.sensitive, "value": if o.sensitive { serde_json::Value::Null } else { o.value.clone() }})))
                    .collect();
                let _ = writeln!(ctx.io.out, "{}", serde_json::to_string_pretty(&m).unwrap_or_default());
            } else if state.outputs.is_empty() {
                let _ = writeln!(
                    ctx.io.err,
                    "Warning: No outputs found\n\nThe state has no outputs: the stack declares none, or they have not been applied yet (`kdeploy apply` records them)."
                );
            } else {
                for (k, o) in &state.outputs {
                    let _ = writeln!(ctx.io.out, "{k} = {}", output_text(o));
                }
            }
            EXIT_OK
        }
    }
}

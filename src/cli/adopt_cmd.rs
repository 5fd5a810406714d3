//! `kdeploy adopt --cluster NAME [-out FILE]`: what runs on a declared cluster, recognised as a
//! Kerberos site ([`crate::adopt`]) and written as formatted stack HCL to review and plan.

use std::path::Path;

use kdeploy_provider::{Kind, Value};

use super::*;
use crate::addr::Address;

pub(super) async fn adopt_cmd(ctx: &mut Ctx<'_, '_>, cluster: &str, out: Option<&Path>, vars: &args::VarArgs) -> i32 {
    let loaded = match ctx.load(vars, &VarSource::Inputs, true) {
        Ok(l) => l,
        Err(e) => {
            ctx.diags(&e.sources, &e.diags);
            return EXIT_ERROR;
        }
    };
    let addr = Address::new(Kind::Cluster, cluster);
    let desired = match loaded.evaluator().desired(&addr) {
        Some(Ok(d)) => d,
        Some(Err(d)) => {
            ctx.diags(&loaded.sources, &d);
            return EXIT_ERROR;
        }
        None => {
            let declared: Vec<String> = loaded.expanded.clusters().iter().map(ToString::to_string).collect();
            ctx.error(
                "Unknown cluster",
                &format!("The stack declares no {addr}. Declared clusters: {}.", if declared.is_empty() { "none".into() } else { declared.join(", ") }),
            );
            return EXIT_ERROR;
        }
    };
    let docker = desired.type_name == "docker";
    let provider_name = kdeploy_provider::provider_for(Kind::Agent, "kerberos", Some(&desired.type_name));
    let provider = match ctx.env.providers.get(provider_name) {
        Ok(p) => p,
        Err(e) => {
            ctx.error("Provider not available", &format!("{addr} needs the {provider_name} provider, but {e}."));
            return EXIT_ERROR;
        }
    };
    // What the last apply recorded of the cluster (a managed cluster's endpoint), else its inputs.
    let value = recorded(ctx, &loaded, &addr).unwrap_or(desired.inputs);
    let running = match provider.discover(&value).await {
        Ok(r) => r,
        Err(e) => {
            ctx.error("Cannot list what runs", &format!("{addr}: {}", e.message));
            return EXIT_ERROR;
        }
    };
    let root = loaded.stack.root();
    let taken: Vec<String> = root.components.iter().map(|c| format!("{}.{}", c.kind, c.name)).collect();
    let imported: Vec<String> = crate::config::imports::ids(&loaded.stack, &loaded.evaluator().ctx()).0.into_values().collect();
    let site = crate::adopt::Site { cluster: &addr.to_string(), docker, taken: &taken, imported: &imported };
    let adoption = crate::adopt::adopt(&site, &running);
    let hcl = fmt::format(&adoption.hcl);
    for line in &adoption.found {
        let _ = writeln!(ctx.io.err, "Found {line}");
    }
    for line in &adoption.skipped {
        let _ = writeln!(ctx.io.err, "Skipped {line}");
    }
    if adoption.found.is_empty() {
        let _ = writeln!(ctx.io.err, "No Kerberos component found on {addr}.");
    }
    let Some(out) = out else {
        let _ = write!(ctx.io.out, "{hcl}");
        return EXIT_OK;
    };
    let path = ctx.path(out);
    // As Terraform's -generate-config-out: never over an existing file.
    if path.exists() {
        ctx.error("Output file exists", &format!("{} already exists; adopt writes a new file only (remove it, or name another).", path.display()));
        return EXIT_ERROR;
    }
    if let Err(e) = std::fs::write(&path, &hcl) {
        ctx.error("Cannot write the stack file", &format!("{}: {e}", path.display()));
        return EXIT_ERROR;
    }
    let _ = writeln!(ctx.io.out, "Wrote {}: review it, then run `kdeploy {}plan`.", out.display(), ctx.chdir_flag());
    EXIT_OK
}

/// The cluster's attributes as the state records them, when it does.
fn recorded(ctx: &mut Ctx<'_, '_>, loaded: &Loaded, addr: &Address) -> Option<Value> {
    let store = loaded.store_with(&ctx.backend).ok()?;
    let (locked, state) = engine::read_unlocked(store).ok()?;
    let value = state.resource(addr).map(crate::plan::planner::state_attrs);
    ctx.release(locked);
    value
}

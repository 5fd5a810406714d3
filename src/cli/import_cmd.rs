//! `kdeploy import ADDR ID`: record an existing object in state as a declared component, the way
//! an `import` block's plan finds it, under the state lock; nothing on the target changes.

use hcl_edit::Decorated;
use hcl_edit::expr::Expression;
use kdeploy_provider::{ComponentRef, ReadRequest, ReadResult, Value};
use kdeploy_state::ResourceState;

use super::*;
use crate::addr::Address;
use crate::config::{Expr, ImportDecl};
use crate::plan::Change;
use crate::plan::planner::state_attrs;

pub(super) async fn import_cmd(ctx: &mut Ctx<'_, '_>, address: &str, id: &str, mut p: PlanArgs) -> i32 {
    let addr: Address = match address.parse() {
        Ok(a) => a,
        Err(e) => {
            ctx.error("Invalid import address", &format!("{e}. Addresses look like vault.main or agent.cam[\"front\"]."));
            return EXIT_ERROR;
        }
    };
    let mut loaded = match ctx.load(&p.vars, &VarSource::Inputs, false) {
        Ok(l) => l,
        Err(e) => {
            ctx.diags(&e.sources, &e.diags);
            return EXIT_ERROR;
        }
    };
    let Some(span) = loaded.expanded.decl(&loaded.stack, &addr).map(|d| d.span.clone()) else {
        ctx.error(
            "Configuration for import target does not exist",
            &format!("The stack declares no {addr}. Declare the component first: an import takes an existing object over as a component of the stack."),
        );
        return EXIT_ERROR;
    };
    // The command is an import block of its own, planned for this component alone.
    loaded.stack.imports.retain(|i| i.to.0 != addr);
    let id_expr = Expr { expr: Expression::String(Decorated::new(id.to_string())), span: span.clone() };
    loaded.stack.imports.push(ImportDecl { to: (addr.clone(), span.clone()), id: id_expr, span });
    p.target = vec![addr.to_string()];
    let (mut store, mut state, plan) = match make_plan(ctx, &loaded, &p, false, "import").await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let found = match (state.resource(&addr), plan.change(&addr)) {
        (Some(_), _) => {
            Err(format!("{addr} is already in state. `kdeploy state rm {addr}` forgets it (the live objects stay) before another object is imported there."))
        }
        (None, Some(c)) if c.import_id.is_some() && c.before.is_some() => Ok(c.clone()),
        _ => Err(format!("the plan of {addr} found nothing to import.")),
    };
    let change = match found {
        Ok(c) => c,
        Err(e) => {
            ctx.release(store);
            ctx.error("Cannot import", &e);
            return EXIT_ERROR;
        }
    };
    let record = as_read(ctx, &plan, &state, &change).await;
    state.upsert(record);
    let code = match state.bump_serial().and_then(|_| store.write(&state)) {
        Ok(()) => {
            let _ = writeln!(ctx.io.out, "{addr}: imported from {id:?}.\n");
            let _ = writeln!(ctx.io.out, "{}", ctx.style_ok("Import successful!"));
            let _ = writeln!(ctx.io.out, "\n{addr} is now in state; nothing on the target changed. `kdeploy plan` shows what kdeploy would change on it.");
            EXIT_OK
        }
        Err(e) => {
            ctx.state_error(&e);
            EXIT_ERROR
        }
    };
    ctx.release(store);
    code
}

/// The state record of an imported object: what a refresh reads of it (so that the next plan
/// compares it like any recorded component), else what the import found.
async fn as_read(ctx: &Ctx<'_, '_>, plan: &Plan, state: &State, c: &Change) -> ResourceState {
    let before = c.before.clone().unwrap_or(Value::Null);
    let cluster = c.cluster.as_ref().and_then(|a| state.resource(a).map(state_attrs).or_else(|| plan.change(a).and_then(|cc| cc.after.clone())));
    let component = ComponentRef { address: c.address.clone(), kind: c.kind, type_name: c.type_name.clone() };
    let read = match ctx.env.providers.get(&c.provider) {
        Ok(provider) => provider.read(vec![ReadRequest { component, recorded: before.clone(), cluster }]).await.ok(),
        Err(_) => None,
    };
    let attributes = match read.and_then(|r| r.into_iter().next()) {
        Some(ReadResult::Found { attributes, .. }) => attributes,
        _ => before,
    };
    ResourceState {
        address: c.address.clone(),
        kind: c.kind,
        type_name: c.type_name.clone(),
        provider: c.provider.clone(),
        attributes: attributes.to_json(),
        sensitive_paths: c.after_sensitive.clone(),
        dependencies: c.depends_on.clone(),
        fingerprint: None,
        create_before_destroy: false,
    }
}

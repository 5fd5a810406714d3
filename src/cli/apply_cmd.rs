//! `kdeploy apply` and `destroy`: a fresh plan approved and applied, or a saved plan applied as it is; the summary and exit code.

use super::*;

pub(super) fn approve(ctx: &mut Ctx<'_, '_>, auto: bool, destroy: bool) -> Result<(), i32> {
    if auto {
        return Ok(());
    }
    if !ctx.input {
        ctx.error(
            "Approval required",
            "kdeploy needs approval to apply, but -input=false forbids asking.\nRun with -auto-approve (after reviewing `kdeploy plan`), or apply a saved plan with `kdeploy apply FILE`.",
        );
        return Err(EXIT_ERROR);
    }
    if !ctx.io.stdin_tty {
        ctx.error(
            "Approval required",
            "kdeploy needs approval to apply, but standard input is not a terminal, so it cannot ask.\nRun with --auto-approve in CI and scripts (after reviewing `kdeploy plan`), or apply a saved plan with `kdeploy apply FILE --auto-approve`.",
        );
        return Err(EXIT_ERROR);
    }
    let what = if destroy { "Do you really want to destroy all the components of this stack?" } else { "Do you want to perform these actions?" };
    let _ = write!(ctx.io.out, "\n{what}\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: ");
    let _ = ctx.io.out.flush();
    let mut line = String::new();
    let _ = ctx.io.input.read_line(&mut line);
    if line.trim() == "yes" {
        let _ = writeln!(ctx.io.out);
        Ok(())
    } else {
        let _ = writeln!(ctx.io.out, "\nApply cancelled.");
        Err(EXIT_ERROR)
    }
}

pub(super) async fn apply_fresh(ctx: &mut Ctx<'_, '_>, p: PlanArgs, run: args::ApplyArgs, destroy: bool) -> i32 {
    let loaded = match ctx.load(&p.vars, &VarSource::Inputs, false) {
        Ok(l) => l,
        Err(e) => {
            ctx.diags(&e.sources, &e.diags);
            return EXIT_ERROR;
        }
    };
    let (mut store, mut state, plan) = match make_plan(ctx, &loaded, &p, destroy, if destroy { "destroy" } else { "apply" }).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let _ = write!(ctx.io.out, "{}", render::plan(ctx.style, &plan));
    if !(plan.has_changes() || plan.options.refresh_only && !plan.drift.is_empty()) {
        let code = forget_settled(ctx, &plan, &mut state, &mut *store);
        ctx.release(store);
        return code;
    }
    if let Err(code) = approve(ctx, run.auto_approve, destroy) {
        ctx.release(store);
        return code;
    }
    let code = do_apply(ctx, &loaded, &plan, &mut state, &mut *store, &run).await;
    ctx.release(store);
    code
}

/// An apply with nothing to change still records that the interrupted operations its refresh
/// found absent are settled, so that they are not reported again.
pub(super) fn forget_settled(ctx: &mut Ctx<'_, '_>, plan: &Plan, state: &mut State, store: &mut dyn StateStore) -> i32 {
    if !crate::plan::forget_settled_pending(state, plan, &std::collections::BTreeSet::new()) {
        return EXIT_OK;
    }
    match state.bump_serial().map_err(|e| e.to_string()).and_then(|_| store.write(state).map_err(|e| e.to_string())) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            ctx.error("Cannot write state", &e);
            EXIT_ERROR
        }
    }
}

pub(super) async fn apply_file(ctx: &mut Ctx<'_, '_>, file: &Path, run: args::ApplyArgs) -> i32 {
    let path = ctx.path(file);
    let plan = match planfile::load(&path) {
        Ok(p) => p,
        Err(e) => {
            ctx.error("Cannot read plan", &e.to_string());
            return EXIT_ERROR;
        }
    };
    let loaded = match ctx.load(&args::VarArgs::default(), &VarSource::Fixed(plan.variables.clone()), false) {
        Ok(l) => l,
        Err(e) => {
            ctx.diags(&e.sources, &e.diags);
            return EXIT_ERROR;
        }
    };
    ctx.backend.partition.clone_from(&plan.options.partition);
    let Some(store) = ctx.store(&loaded) else { return EXIT_ERROR };
    let (mut store, mut state) = match ctx.lock(store, "apply", std::time::Duration::ZERO) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if let Some(reason) = engine::stale_reason(&plan, &state, &loaded) {
        ctx.release(store);
        ctx.error(
            "Saved plan is stale",
            &format!(
                "The plan in {} can no longer be applied: {reason}.\nNothing was changed. Run `kdeploy plan -out {}` again, review it, and apply the new plan.",
                file.display(),
                file.display()
            ),
        );
        return EXIT_ERROR;
    }
    // A saved plan was approved when it was reviewed; apply it as it is.
    let code = do_apply(ctx, &loaded, &plan, &mut state, &mut *store, &run).await;
    ctx.release(store);
    code
}

pub(super) async fn do_apply(ctx: &mut Ctx<'_, '_>, loaded: &Loaded, plan: &Plan, state: &mut State, store: &mut dyn StateStore, run: &args::ApplyArgs) -> i32 {
    let mut reporter = progress::LineReporter::new(&mut *ctx.io.out, ctx.style.color);
    let outcome = engine::apply(
        loaded,
        plan,
        state,
        store,
        &ctx.env.providers,
        ApplyOptions { parallelism: run.parallelism.max(1), ..Default::default() },
        &mut reporter,
        ctx.env.interrupt.clone(),
    )
    .await;
    if outcome.state_error.is_some() {
        save_errored_state(ctx, state);
    }
    let code = summarize(ctx, plan, &outcome);
    // As Terraform: a successful apply ends with the root outputs (sensitive ones hidden).
    if code == EXIT_OK && !plan.options.destroy && !state.outputs.is_empty() {
        let _ = writeln!(ctx.io.out, "\nOutputs:\n");
        for (name, o) in &state.outputs {
            let _ = writeln!(ctx.io.out, "{name} = {}", output_text(o));
        }
    }
    code
}

/// After a failed state write during apply: keeps the unsaved state in `errored.kdstate` in the
/// working directory (sensitive values encrypted when a state key is set) and says how to push it.
pub(super) fn save_errored_state(ctx: &mut Ctx<'_, '_>, state: &State) {
    let path = ctx.dir.join("errored.kdstate");
    let key = kdeploy_state::StateKey::from_env(&ctx.env.vars, &ctx.dir).unwrap_or_default();
    let written = kdeploy_state::crypt::encode_sealed(state, key.as_ref()).map_err(|e| e.to_string()).and_then(|bytes| {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path).map_err(|e| e.to_string())?;
        f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(|e| e.to_string())
    });
    let chdir = ctx.chdir_flag();
    match written {
        Ok(()) => ctx.error(
            "State saved to errored.kdstate",
            &format!("The state backend could not be written, so the state with everything this run did was saved to {}.\nOnce the backend works again (network, credentials), upload it with:\n  kdeploy {chdir}state push errored.kdstate\nand then delete the file. Until then, runs against the backend will not know what this run created.", path.display()),
        ),
        Err(e) => ctx.error("Cannot save errored.kdstate", &format!("The state could not be written to the backend nor to {}: {e}", path.display())),
    }
}

pub(super) fn summarize(ctx: &mut Ctx<'_, '_>, plan: &Plan, o: &Outcome) -> i32 {
    use crate::plan::Action;
    let mut add = 0;
    let mut change = 0;
    let mut destroyed = 0;
    for (_, a) in &o.done {
        match a {
            Action::Create => add += 1,
            Action::Update => change += 1,
            Action::Delete => destroyed += 1,
            Action::DeleteThenCreate | Action::CreateThenDelete => {
                add += 1;
                destroyed += 1;
            }
            _ => {}
        }
    }
    if let Some(e) = &o.state_error {
        ctx.error(
            "Failed to save state",
            &format!("{e}\nThe operations that finished are real but could not all be recorded. Fix the problem (disk space, permissions) and run `kdeploy plan`: it reads the live objects and will not create duplicates."),
        );
    }
    for c in o.checks.iter().filter(|c| c.ok) {
        let _ = writeln!(ctx.io.out, "{}", c.message);
    }
    if o.ok() {
        let what = if plan.options.refresh_only {
            "Refresh complete!".to_string()
        } else if plan.options.destroy {
            format!("Destroy complete! Resources: {destroyed} destroyed.")
        } else {
            let imported = o.done.iter().filter(|(a, _)| plan.change(a).is_some_and(|c| c.import_id.is_some())).count();
            let imported = if imported > 0 { format!("{imported} imported, ") } else { String::new() };
            format!("Apply complete! Resources: {imported}{add} added, {change} changed, {destroyed} destroyed.")
        };
        let _ = writeln!(ctx.io.out, "\n{}", ctx.style_ok(&what));
        return EXIT_OK;
    }
    let failed_checks: Vec<&kdeploy_provider::Check> = o.checks.iter().filter(|c| !c.ok).collect();
    let only_checks = o.failed.is_empty() && o.skipped.is_empty() && o.not_started.is_empty() && !o.interrupted && o.state_error.is_none();
    if only_checks {
        let _ = writeln!(ctx.io.err, "\nApply complete, but the deployment does not work yet: {} of {} checks failed.", failed_checks.len(), o.checks.len());
        for c in &failed_checks {
            let _ = writeln!(ctx.io.err, "  failed check: {}", c.message);
        }
        let _ = writeln!(ctx.io.err, "Everything applied is recorded in state; `kdeploy plan` checks again.");
        return EXIT_ERROR;
    }
    let _ = writeln!(
        ctx.io.err,
        "\nApply {}: {} done, {} failed, {} skipped, {} not started.",
        if o.interrupted { "interrupted" } else { "failed" },
        o.done.len(),
        o.failed.len(),
        o.skipped.len(),
        o.not_started.len()
    );
    for (a, m) in &o.failed {
        let _ = writeln!(ctx.io.err, "  failed:  {a}: {m}");
    }
    for c in &failed_checks {
        let _ = writeln!(ctx.io.err, "  failed check: {}", c.message);
    }
    let mut by_cause: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (a, c) in &o.skipped {
        by_cause.entry(c.to_string()).or_default().push(a.to_string());
    }
    for (c, list) in by_cause {
        let _ = writeln!(ctx.io.err, "  skipped: {} (because {c} failed)", list.join(", "));
    }
    if !o.not_started.is_empty() {
        let _ = writeln!(ctx.io.err, "  not started: {}", o.not_started.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "));
    }
    if o.state_error.is_none() {
        let _ = writeln!(ctx.io.err, "State was saved after every step; run `kdeploy plan` to see what is left.");
    }
    EXIT_ERROR
}

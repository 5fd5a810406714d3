//! `kdeploy plan`: lock, refresh, plan, render or save the plan.

use super::*;

pub(super) fn plan_options(p: &PlanArgs, destroy: bool) -> PlanOptions {
    PlanOptions {
        destroy: destroy || p.destroy,
        refresh: p.refresh,
        refresh_only: p.refresh_only,
        targets: p.target.clone(),
        replace: p.replace.clone(),
        delete_data: p.delete_data,
        force_conflicts: p.force_conflicts,
        partition: p.partition.clone(),
    }
}

pub(super) fn check_addresses(ctx: &mut Ctx<'_, '_>, p: &PlanArgs) -> bool {
    let mut ok = true;
    for (flag, a) in p.target.iter().map(|a| ("-target", a)).chain(p.replace.iter().map(|a| ("-replace", a))) {
        if let Err(e) = a.parse::<Target>() {
            ctx.error(&format!("Invalid {flag} address"), &format!("{e}. Addresses look like vault.main, agent.cam[\"front\"] or module.site."));
            ok = false;
        }
    }
    ok
}

/// Locks, reads state, plans. Returns the store (still locked) and the state with the plan.
pub(super) async fn make_plan(ctx: &mut Ctx<'_, '_>, loaded: &Loaded, p: &PlanArgs, destroy: bool, operation: &str) -> Result<(Locked, State, Plan), i32> {
    if !check_addresses(ctx, p) {
        return Err(EXIT_ERROR);
    }
    ctx.backend.partition.clone_from(&p.partition);
    let Some(store) = ctx.store(loaded) else { return Err(EXIT_ERROR) };
    let (store, state) = if p.lock { ctx.lock(store, operation, p.lock_timeout)? } else { ctx.opened(engine::read_unlocked(store))? };
    match engine::plan(loaded, &state, &ctx.env.providers, &plan_options(p, destroy)).await {
        Ok(plan) => Ok((store, state, plan)),
        Err(diags) => {
            ctx.release(store);
            if p.output_format() == args::PlanFormat::Json {
                ctx.diags_json(&loaded.sources, &diags);
            } else {
                ctx.diags(&loaded.sources, &diags);
            }
            Err(EXIT_ERROR)
        }
    }
}

pub(super) async fn plan_cmd(ctx: &mut Ctx<'_, '_>, p: PlanArgs) -> i32 {
    let loaded = match ctx.load(&p.vars, &VarSource::Inputs, false) {
        Ok(l) => l,
        Err(e) => {
            if p.output_format() == args::PlanFormat::Json {
                ctx.diags_json(&e.sources, &e.diags);
            } else {
                ctx.diags(&e.sources, &e.diags);
            }
            return EXIT_ERROR;
        }
    };
    let (store, _state, plan) = match make_plan(ctx, &loaded, &p, false, "plan").await {
        Ok(x) => x,
        Err(code) => return code,
    };
    ctx.release(store);
    let format = p.output_format();
    match format {
        args::PlanFormat::Json => {
            let _ = writeln!(ctx.io.out, "{}", serde_json::to_string_pretty(&plan_json(&plan)).unwrap_or_default());
        }
        args::PlanFormat::Markdown => {
            let _ = write!(ctx.io.out, "{}", crate::plan::markdown::markdown(&plan));
        }
        args::PlanFormat::Human => {
            let _ = write!(ctx.io.out, "{}", render::plan(ctx.style, &plan));
        }
    }
    if let Some(out) = &p.out {
        let path = ctx.path(out);
        if let Err(e) = planfile::save(&plan, &path) {
            ctx.error("Cannot save plan", &e.to_string());
            return EXIT_ERROR;
        }
        if format == args::PlanFormat::Human {
            let chdir = ctx.chdir_flag();
            let _ =
                writeln!(ctx.io.out, "\nSaved the plan to: {}\nTo perform exactly these actions, run: kdeploy {chdir}apply {}", out.display(), out.display());
        }
    }
    if p.detailed_exitcode && plan.has_changes() { EXIT_CHANGES } else { EXIT_OK }
}

//! The `kdeploy` command line: flags, views and exit codes. Business logic lives in
//! [`crate::engine`]; this module only chooses what to run and how to show it.

pub mod args;
pub mod dist;
pub mod fmt;
pub mod progress;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Parser;
use kdeploy_state::{State, StateError, StateStore};
use serde_json::json;
use tokio::sync::Notify;

use crate::addr::Target;
use crate::apply::{ApplyOptions, Outcome};
use crate::config::vars::VarArg;
use crate::diag::{Diagnostic, Diagnostics, SourceMap};
use crate::engine::{self, LoadError, Loaded, VarSource, VERSION};
use crate::plan::json::{plan_json, redacted};
use crate::plan::render::{self, Style};
use crate::plan::{planfile, Plan, PlanOptions};
use crate::providers::Providers;
use args::{Cli, Command, GraphFormat, PlanArgs, StateCommand};

/// Exit codes.
pub const EXIT_OK: i32 = 0;
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_CHANGES: i32 = 2;
pub const EXIT_FMT: i32 = 3;

/// Where the CLI reads and writes, so that tests can run it in-process.
pub struct Io<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    pub input: &'a mut dyn BufRead,
    pub stdin_tty: bool,
    pub stdout_tty: bool,
}

/// Everything a run needs from its environment.
pub struct Env {
    pub providers: Providers,
    /// Environment variables (KDEPLOY_VAR_*, NO_COLOR).
    pub vars: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub interrupt: Arc<Notify>,
}

struct Ctx<'a, 'b> {
    io: &'a mut Io<'b>,
    env: &'a Env,
    dir: PathBuf,
    style: Style,
    /// `-backend-config` and the environment, for opening the state store.
    backend: engine::BackendOptions,
}

impl Ctx<'_, '_> {
    fn diags(&mut self, sources: &SourceMap, diags: &Diagnostics) {
        let text = sources.render_all(diags, self.style.color);
        let _ = write!(self.io.err, "{text}");
        if !text.is_empty() && !text.ends_with('\n') {
            let _ = writeln!(self.io.err);
        }
    }

    fn error(&mut self, summary: &str, detail: &str) {
        let d = Diagnostic::error(summary, detail);
        self.diags(&SourceMap::new(), &d.into());
    }

    fn diags_json(&mut self, sources: &SourceMap, diags: &Diagnostics) {
        let v = json!({
            "format_version": "1.0",
            "valid": !diags.has_errors(),
            "error_count": diags.errors().count(),
            "warning_count": diags.0.len() - diags.errors().count(),
            "diagnostics": diags.0.iter().map(|d| sources.to_json(d)).collect::<Vec<_>>(),
        });
        let _ = writeln!(self.io.out, "{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    }

    fn load(&mut self, vars: &args::VarArgs, source: &VarSource, allow_missing: bool) -> Result<Loaded, LoadError> {
        let mut var_args = Vec::new();
        let mut errs = Diagnostics::new();
        // -var and -var-file keep their relative order on the command line.
        for v in &vars.var {
            match VarArg::parse_var(v) {
                Ok(a) => var_args.push(a),
                Err(e) => errs.push(Diagnostic::error("Invalid -var option", e).hint("use -var NAME=VALUE")),
            }
        }
        for f in &vars.var_file {
            let p = if f.is_absolute() { f.clone() } else { self.env.cwd.join(f) };
            var_args.push(VarArg::File(p));
        }
        if errs.has_errors() {
            return Err(LoadError { sources: SourceMap::new(), diags: errs });
        }
        let loaded = engine::load(&self.dir, &var_args, &self.env.vars, source, allow_missing)?;
        if let Some(diags) = loaded.errors() {
            return Err(LoadError { sources: loaded.sources, diags });
        }
        if !loaded.diags.is_empty() {
            let w = loaded.diags.clone();
            self.diags(&loaded.sources, &w);
        }
        Ok(loaded)
    }
}

/// Parses `args` (including the program name) and runs the command. Returns the exit code.
pub async fn run(args: Vec<String>, io: &mut Io<'_>, env: &Env) -> i32 {
    // One process-wide TLS crypto provider before any client exists: kube links rustls with
    // ring and the AWS SDK with aws-lc-rs, and with both present rustls cannot choose.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = match Cli::try_parse_from(args::normalize(args)) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_ERROR } else { EXIT_OK };
            let text = e.render().to_string();
            if e.use_stderr() {
                let _ = write!(io.err, "{text}");
            } else {
                let _ = write!(io.out, "{text}");
            }
            return code;
        }
    };
    let dir = match &cli.chdir {
        Some(d) if d.is_absolute() => d.clone(),
        Some(d) => env.cwd.join(d),
        None => env.cwd.clone(),
    };
    let color = io.stdout_tty && !cli.no_color && !env.vars.contains_key("NO_COLOR");
    let overrides = match parse_pairs(&cli.backend_config) {
        Ok(o) => o,
        Err(bad) => {
            let _ = writeln!(io.err, "Error: invalid -backend-config {bad:?}: use -backend-config KEY=VALUE");
            return EXIT_ERROR;
        }
    };
    let backend = engine::BackendOptions { overrides, env: env.vars.clone() };
    let mut ctx = Ctx { io, env, dir, style: Style { color }, backend };
    match cli.command {
        Command::Validate { json } => validate(&mut ctx, json),
        Command::Fmt { check, files } => fmt::run(&mut *ctx.io.out, &mut *ctx.io.err, &ctx.dir, check, &files),
        Command::Plan(p) => plan_cmd(&mut ctx, p).await,
        Command::Apply { plan_file: Some(f), plan: _, run } => apply_file(&mut ctx, &f, run).await,
        Command::Apply { plan_file: None, plan, run } => apply_fresh(&mut ctx, plan, run, false).await,
        Command::Destroy { plan, run } => apply_fresh(&mut ctx, plan, run, true).await,
        Command::Show { plan_file, json } => show(&mut ctx, plan_file.as_deref(), json),
        Command::Graph { format, vars } => graph(&mut ctx, format, &vars),
        Command::Drift(d) => drift_cmd(&mut ctx, d).await,
        Command::State(s) => state_cmd(&mut ctx, s),
        Command::Output { name, json, raw } => output(&mut ctx, name.as_deref(), json, raw),
        Command::ForceUnlock { id, even_if_running } => force_unlock(&mut ctx, &id, even_if_running),
        Command::Init { migrate_state, from_backend_config, force, lock_timeout } => init_cmd(&mut ctx, migrate_state, &from_backend_config, force, lock_timeout),
        Command::Version { json } => version(&mut ctx, json),
        Command::Completion { shell } => completion(&mut ctx, shell),
        Command::Man { out_dir } => man(&mut ctx, out_dir.as_deref()),
    }
}

fn version(ctx: &mut Ctx<'_, '_>, json: bool) -> i32 {
    let providers: Vec<&str> = ctx.env.providers.names().collect();
    let text = if json { format!("{}\n", dist::version_json(&providers)) } else { dist::version_text(&providers) };
    let _ = write!(ctx.io.out, "{text}");
    EXIT_OK
}

fn completion(ctx: &mut Ctx<'_, '_>, shell: clap_complete::Shell) -> i32 {
    match dist::completion(&mut *ctx.io.out, shell) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            ctx.error("Cannot write the completion script", &e.to_string());
            EXIT_ERROR
        }
    }
}

fn man(ctx: &mut Ctx<'_, '_>, out_dir: Option<&Path>) -> i32 {
    let result = match out_dir {
        None => dist::man_page(&mut *ctx.io.out),
        Some(dir) => {
            let dir = if dir.is_absolute() { dir.to_path_buf() } else { ctx.env.cwd.join(dir) };
            dist::man_pages(&dir).map(|()| {
                let _ = writeln!(ctx.io.out, "Wrote kdeploy.1 and one page per command to {}", dir.display());
            }).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))
        }
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            ctx.error("Cannot write the man pages", &e.to_string());
            EXIT_ERROR
        }
    }
}

fn validate(ctx: &mut Ctx<'_, '_>, json: bool) -> i32 {
    let result = ctx.load(&args::VarArgs::default(), &VarSource::Inputs, true);
    let (sources, diags) = match result {
        Ok(loaded) => {
            let mut d = loaded.diags.clone();
            d.extend(loaded.check());
            (loaded.sources, d.sorted())
        }
        Err(e) => (e.sources, e.diags),
    };
    if json {
        ctx.diags_json(&sources, &diags);
    } else if diags.has_errors() {
        ctx.diags(&sources, &diags);
    } else {
        let _ = writeln!(ctx.io.out, "{} The stack is valid.", ctx.style_ok("Success!"));
    }
    if diags.has_errors() { EXIT_ERROR } else { EXIT_OK }
}

impl Ctx<'_, '_> {
    fn style_ok(&self, s: &str) -> String {
        if self.style.color { format!("\x1b[1;32m{s}\x1b[0m") } else { s.to_string() }
    }

    fn store(&mut self, loaded: &Loaded) -> Option<Box<dyn StateStore>> {
        match loaded.store_with(&self.backend) {
            Ok(s) => Some(s),
            Err(d) => {
                self.diags(&loaded.sources, &d.into());
                None
            }
        }
    }

    fn state_error(&mut self, e: &StateError) {
        self.error("State error", &e.to_string());
    }

    /// Prints what the store has to say (e.g. an expired lock was taken over).
    fn store_warnings(&mut self, store: &mut dyn StateStore) {
        for w in store.take_warnings() {
            let _ = writeln!(self.io.err, "Warning: {w}");
        }
    }
}

fn plan_options(p: &PlanArgs, destroy: bool) -> PlanOptions {
    PlanOptions {
        destroy: destroy || p.destroy,
        refresh: p.refresh,
        refresh_only: p.refresh_only,
        targets: p.target.clone(),
        replace: p.replace.clone(),
        delete_data: p.delete_data,
        force_conflicts: p.force_conflicts,
    }
}

fn check_addresses(ctx: &mut Ctx<'_, '_>, p: &PlanArgs) -> bool {
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
async fn make_plan(ctx: &mut Ctx<'_, '_>, loaded: &Loaded, p: &PlanArgs, destroy: bool, operation: &str) -> Result<(Box<dyn StateStore>, State, Plan), i32> {
    if !check_addresses(ctx, p) {
        return Err(EXIT_ERROR);
    }
    let Some(mut store) = ctx.store(loaded) else { return Err(EXIT_ERROR) };
    let state = match engine::lock_and_read(store.as_mut(), operation, p.lock_timeout) {
        Ok(s) => s,
        Err(e) => {
            ctx.state_error(&e);
            return Err(EXIT_ERROR);
        }
    };
    ctx.store_warnings(store.as_mut());
    match engine::plan(loaded, &state, &ctx.env.providers, &plan_options(p, destroy)).await {
        Ok(plan) => Ok((store, state, plan)),
        Err(diags) => {
            let _ = store.unlock();
            if p.json {
                ctx.diags_json(&loaded.sources, &diags);
            } else {
                ctx.diags(&loaded.sources, &diags);
            }
            Err(EXIT_ERROR)
        }
    }
}

async fn plan_cmd(ctx: &mut Ctx<'_, '_>, p: PlanArgs) -> i32 {
    let loaded = match ctx.load(&p.vars, &VarSource::Inputs, false) {
        Ok(l) => l,
        Err(e) => {
            if p.json {
                ctx.diags_json(&e.sources, &e.diags);
            } else {
                ctx.diags(&e.sources, &e.diags);
            }
            return EXIT_ERROR;
        }
    };
    let (mut store, _state, plan) = match make_plan(ctx, &loaded, &p, false, "plan").await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let _ = store.unlock();
    if p.json {
        let _ = writeln!(ctx.io.out, "{}", serde_json::to_string_pretty(&plan_json(&plan)).unwrap_or_default());
    } else {
        let _ = write!(ctx.io.out, "{}", render::plan(ctx.style, &plan));
    }
    if let Some(out) = &p.out {
        let path = if out.is_absolute() { out.clone() } else { ctx.env.cwd.join(out) };
        if let Err(e) = planfile::save(&plan, &path) {
            ctx.error("Cannot save plan", &e.to_string());
            return EXIT_ERROR;
        }
        if !p.json {
            let _ = writeln!(ctx.io.out, "\nSaved the plan to: {}\nTo perform exactly these actions, run: kdeploy apply {}", out.display(), out.display());
        }
    }
    if p.detailed_exitcode && plan.has_changes() { EXIT_CHANGES } else { EXIT_OK }
}

fn approve(ctx: &mut Ctx<'_, '_>, auto: bool, destroy: bool) -> Result<(), i32> {
    if auto {
        return Ok(());
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

async fn apply_fresh(ctx: &mut Ctx<'_, '_>, p: PlanArgs, run: args::ApplyArgs, destroy: bool) -> i32 {
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
    if !plan.has_changes() && !(plan.options.refresh_only && !plan.drift.is_empty()) {
        let _ = store.unlock();
        return EXIT_OK;
    }
    if let Err(code) = approve(ctx, run.auto_approve, destroy) {
        let _ = store.unlock();
        return code;
    }
    let code = do_apply(ctx, &loaded, &plan, &mut state, store.as_mut(), &run).await;
    let _ = store.unlock();
    code
}

async fn apply_file(ctx: &mut Ctx<'_, '_>, file: &Path, run: args::ApplyArgs) -> i32 {
    let path = if file.is_absolute() { file.to_path_buf() } else { ctx.env.cwd.join(file) };
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
    let Some(mut store) = ctx.store(&loaded) else { return EXIT_ERROR };
    let mut state = match engine::lock_and_read(store.as_mut(), "apply", std::time::Duration::ZERO) {
        Ok(s) => s,
        Err(e) => {
            ctx.state_error(&e);
            return EXIT_ERROR;
        }
    };
    ctx.store_warnings(store.as_mut());
    if let Some(reason) = engine::stale_reason(&plan, &state, &loaded) {
        let _ = store.unlock();
        ctx.error("Saved plan is stale", &format!("The plan in {} can no longer be applied: {reason}.\nNothing was changed. Run `kdeploy plan -out {}` again, review it, and apply the new plan.", file.display(), file.display()));
        return EXIT_ERROR;
    }
    // A saved plan was approved when it was reviewed; apply it as it is.
    let code = do_apply(ctx, &loaded, &plan, &mut state, store.as_mut(), &run).await;
    let _ = store.unlock();
    code
}

async fn do_apply(ctx: &mut Ctx<'_, '_>, loaded: &Loaded, plan: &Plan, state: &mut State, store: &mut dyn StateStore, run: &args::ApplyArgs) -> i32 {
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
    summarize(ctx, plan, &outcome)
}

/// After a failed state write during apply: keeps the unsaved state in `errored.kdstate` in the
/// working directory (sensitive values encrypted when a state key is set) and says how to push it.
fn save_errored_state(ctx: &mut Ctx<'_, '_>, state: &State) {
    let path = ctx.env.cwd.join("errored.kdstate");
    let key = match kdeploy_state::StateKey::from_env(&ctx.env.vars, &ctx.dir) {
        Ok(k) => k,
        Err(_) => None,
    };
    let written = kdeploy_state::crypt::encode_sealed(state, key.as_ref()).map_err(|e| e.to_string()).and_then(|bytes| {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path).map_err(|e| e.to_string())?;
        f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(|e| e.to_string())
    });
    let chdir = if ctx.dir != ctx.env.cwd { format!("-C {} ", ctx.dir.display()) } else { String::new() };
    match written {
        Ok(()) => ctx.error(
            "State saved to errored.kdstate",
            &format!("The state backend could not be written, so the state with everything this run did was saved to {}.\nOnce the backend works again (network, credentials), upload it with:\n  kdeploy {chdir}state push errored.kdstate\nand then delete the file. Until then, runs against the backend will not know what this run created.", path.display()),
        ),
        Err(e) => ctx.error("Cannot save errored.kdstate", &format!("The state could not be written to the backend nor to {}: {e}", path.display())),
    }
}

fn summarize(ctx: &mut Ctx<'_, '_>, plan: &Plan, o: &Outcome) -> i32 {
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
        let what = if plan.options.refresh_only { "Refresh complete!".to_string() } else if plan.options.destroy { format!("Destroy complete! Resources: {destroyed} destroyed.") } else { format!("Apply complete! Resources: {add} added, {change} changed, {destroyed} destroyed.") };
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
    let _ = writeln!(ctx.io.err, "\nApply {}: {} done, {} failed, {} skipped, {} not started.", if o.interrupted { "interrupted" } else { "failed" }, o.done.len(), o.failed.len(), o.skipped.len(), o.not_started.len());
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

fn read_state(ctx: &mut Ctx<'_, '_>) -> Result<Option<State>, i32> {
    let mut store = match state_store(ctx) {
        Ok(s) => s,
        Err(c) => return Err(c),
    };
    store.read().map_err(|e| {
        ctx.state_error(&e);
        EXIT_ERROR
    })
}

/// The state store without evaluating the stack (a backend block, or the default path).
fn state_store(ctx: &mut Ctx<'_, '_>) -> Result<Box<dyn StateStore>, i32> {
    let mut sources = SourceMap::new();
    let (stack, diags) = crate::config::load::load_stack(&ctx.dir, &mut sources);
    if stack.modules.is_empty() || (diags.has_errors() && stack.stack.backend.is_some()) {
        // Without stack files the default location still works.
        return engine::open_store("local", &ctx.backend.overrides.iter().cloned().collect(), &ctx.dir, &ctx.backend.env).map_err(|d| {
            ctx.diags(&SourceMap::new(), &d.into());
            EXIT_ERROR
        });
    }
    let loaded_like = Loaded {
        dir: ctx.dir.clone(),
        stack,
        sources,
        root_vars: BTreeMap::new(),
        expanded: Default::default(),
        graph: Default::default(),
        diags: Diagnostics::new(),
    };
    ctx.store(&loaded_like).ok_or(EXIT_ERROR)
}

fn show(ctx: &mut Ctx<'_, '_>, file: Option<&Path>, json: bool) -> i32 {
    if let Some(file) = file {
        let path = if file.is_absolute() { file.to_path_buf() } else { ctx.env.cwd.join(file) };
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

fn output_text(o: &kdeploy_state::OutputState) -> String {
    if o.sensitive { "<sensitive>".into() } else { kdeploy_provider::Value::from_json(&o.value).render_inline() }
}

fn state_resource_text(r: &kdeploy_state::ResourceState) -> String {
    let v = redacted(&kdeploy_provider::Value::from_json(&r.attributes), &r.sensitive_paths);
    let mut out = format!("# {}: type {:?}, provider {}\n{} {{\n", r.address, r.type_name, r.provider, r.address);
    if let Some(m) = v.as_object() {
        let width = m.keys().map(String::len).max().unwrap_or(0);
        for (k, val) in m {
            let shown = if r.sensitive_paths.iter().any(|p| *p == kdeploy_provider::AttrPath::attr(k)) { "(sensitive value)".to_string() } else { val.to_string() };
            out.push_str(&format!("    {k:width$} = {shown}\n"));
        }
    }
    out.push_str("}\n\n");
    out
}

async fn drift_cmd(ctx: &mut Ctx<'_, '_>, d: args::DriftArgs) -> i32 {
    let format = if d.json { args::DriftFormat::Json } else { d.format };
    let loaded = match ctx.load(&d.vars, &VarSource::Inputs, true) {
        Ok(l) => l,
        Err(e) => {
            ctx.diags(&e.sources, &e.diags);
            return EXIT_ERROR;
        }
    };
    let Some(mut store) = ctx.store(&loaded) else { return EXIT_ERROR };
    // Read-only: no lock, so a running apply is never blocked by the cron.
    let state = match store.read() {
        Ok(Some(s)) => s,
        Ok(None) => State::new(VERSION),
        Err(e) => {
            ctx.state_error(&e);
            return EXIT_ERROR;
        }
    };
    let refreshed = match crate::plan::planner::refresh(&state, &ctx.env.providers, &[]).await {
        Ok(r) => r,
        Err(diags) => {
            ctx.diags(&loaded.sources, &diags);
            return EXIT_ERROR;
        }
    };
    let ignore_changes = |address: &str| -> Vec<String> {
        address
            .parse::<crate::addr::Address>()
            .ok()
            .and_then(|a| loaded.expanded.decl(&loaded.stack, &a).map(|d| d.lifecycle.ignore_changes.iter().map(|(n, _)| n.clone()).collect()))
            .unwrap_or_default()
    };
    let report = crate::drift::report(&refreshed.drift, state.resources.len(), &ignore_changes, &loaded.stack.stack.drift_ignore, &refreshed.health);
    let text = match format {
        args::DriftFormat::Human => crate::drift::human(&report, ctx.style),
        args::DriftFormat::Json => format!("{}\n", serde_json::to_string_pretty(&crate::drift::to_json(&report)).unwrap_or_default()),
        args::DriftFormat::Markdown => crate::drift::markdown(&report),
    };
    let _ = write!(ctx.io.out, "{text}");
    if let (Some(url), true) = (&d.notify, report.drifted()) {
        if let Err(e) = crate::drift::notify(url, &report, d.notify_timeout).await {
            let _ = writeln!(ctx.io.err, "warning: could not send the drift report to the webhook: {e}");
        }
    }
    if d.detailed_exitcode && report.drifted() { EXIT_CHANGES } else { EXIT_OK }
}

fn graph(ctx: &mut Ctx<'_, '_>, format: GraphFormat, vars: &args::VarArgs) -> i32 {
    let loaded = match ctx.load(vars, &VarSource::Inputs, true) {
        Ok(l) => l,
        Err(e) => {
            ctx.diags(&e.sources, &e.diags);
            return EXIT_ERROR;
        }
    };
    let text = match format {
        GraphFormat::Dot => crate::graph::render::dot(&loaded.graph),
        GraphFormat::Text => crate::graph::render::text(&loaded.graph),
    };
    let _ = write!(ctx.io.out, "{text}");
    EXIT_OK
}

fn state_cmd(ctx: &mut Ctx<'_, '_>, cmd: StateCommand) -> i32 {
    match cmd {
        StateCommand::List { addresses } => {
            let state = match read_state(ctx) {
                Ok(s) => s.unwrap_or_else(|| State::new(VERSION)),
                Err(c) => return c,
            };
            for r in &state.resources {
                if addresses.is_empty() || addresses.iter().any(|a| kdeploy_state::address_matches(&r.address, a)) {
                    let _ = writeln!(ctx.io.out, "{}", r.address);
                }
            }
            EXIT_OK
        }
        StateCommand::Show { address } => {
            let state = match read_state(ctx) {
                Ok(s) => s.unwrap_or_else(|| State::new(VERSION)),
                Err(c) => return c,
            };
            match state.resource(&address) {
                Some(r) => {
                    let _ = write!(ctx.io.out, "{}", state_resource_text(r));
                    EXIT_OK
                }
                None => {
                    ctx.error("No such component in state", &format!("The state has no component at {address}. `kdeploy state list` shows what it has."));
                    EXIT_ERROR
                }
            }
        }
        StateCommand::Rm { addresses, lock_timeout } => edit_state(ctx, "state rm", lock_timeout, |state, out| {
            let mut removed = 0;
            for a in &addresses {
                let gone = state.remove_matching(a);
                if gone.is_empty() {
                    return Err(format!("the state has nothing at {a}; `kdeploy state list` shows what it has"));
                }
                for r in gone {
                    let _ = writeln!(out, "Removed {}", r.address);
                    removed += 1;
                }
            }
            let _ = writeln!(out, "Successfully removed {removed} component(s) from state. The live objects were not touched.");
            Ok(())
        }),
        StateCommand::Pull => state_pull(ctx),
        StateCommand::Push { file, force, lock_timeout } => state_push(ctx, &file, force, lock_timeout),
        StateCommand::Mv { source, destination, lock_timeout } => edit_state(ctx, "state mv", lock_timeout, |state, out| {
            let n = state.mv(&source, &destination).map_err(|e| e.to_string())?;
            let _ = writeln!(out, "Move {source:?} to {destination:?}\nSuccessfully moved {n} object(s).");
            Ok(())
        }),
    }
}

fn edit_state(ctx: &mut Ctx<'_, '_>, op: &str, timeout: std::time::Duration, f: impl FnOnce(&mut State, &mut dyn Write) -> Result<(), String>) -> i32 {
    let mut store = match state_store(ctx) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let mut state = match engine::lock_and_read(store.as_mut(), op, timeout) {
        Ok(s) => s,
        Err(e) => {
            ctx.state_error(&e);
            return EXIT_ERROR;
        }
    };
    ctx.store_warnings(store.as_mut());
    let mut buf = Vec::new();
    let result = f(&mut state, &mut buf);
    let code = match result {
        Ok(()) => {
            match state.bump_serial().and_then(|_| store.write(&state)) {
                Ok(()) => {
                    let _ = ctx.io.out.write_all(&buf);
                    EXIT_OK
                }
                Err(e) => {
                    ctx.state_error(&e);
                    EXIT_ERROR
                }
            }
        }
        Err(e) => {
            ctx.error(&format!("Cannot {op}"), &e);
            EXIT_ERROR
        }
    };
    let _ = store.unlock();
    code
}

fn output(ctx: &mut Ctx<'_, '_>, name: Option<&str>, json: bool, raw: bool) -> i32 {
    let state = match read_state(ctx) {
        Ok(s) => s.unwrap_or_else(|| State::new(VERSION)),
        Err(c) => return c,
    };
    match name {
        Some(n) => {
            let Some(o) = state.outputs.get(n) else {
                ctx.error("Output not found", &format!("The state has no output named {n:?}. Outputs are recorded by `kdeploy apply`; `kdeploy output` lists them."));
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
            } else {
                for (k, o) in &state.outputs {
                    let _ = writeln!(ctx.io.out, "{k} = {}", output_text(o));
                }
            }
            EXIT_OK
        }
    }
}

fn force_unlock(ctx: &mut Ctx<'_, '_>, id: &str, even_if_running: bool) -> i32 {
    let mut store = match state_store(ctx) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let result = if even_if_running {
        let _ = writeln!(ctx.io.err, "warning: breaking the lock of a run that may still be running; it will refuse its next state write and keep its changes in errored.kdstate");
        store.force_unlock_running(id)
    } else {
        store.force_unlock(id)
    };
    match result {
        Ok(()) => {
            let _ = writeln!(ctx.io.out, "kdeploy state has been successfully unlocked!\n\nThe state has been unlocked, and kdeploy commands should now be able to obtain a new lock on the remote state.");
            EXIT_OK
        }
        Err(e) => {
            ctx.state_error(&e);
            EXIT_ERROR
        }
    }
}

/// `KEY=VALUE` pairs; the offending text on error.
fn parse_pairs(items: &[String]) -> Result<Vec<(String, String)>, String> {
    items
        .iter()
        .map(|i| match i.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
            _ => Err(i.clone()),
        })
        .collect()
}

fn state_pull(ctx: &mut Ctx<'_, '_>) -> i32 {
    let mut store = match state_store(ctx) {
        Ok(s) => s,
        Err(c) => return c,
    };
    match store.read_stored() {
        Ok(Some(state)) => {
            let _ = ctx.io.out.write_all(&kdeploy_state::encode(&state));
            EXIT_OK
        }
        Ok(None) => {
            let _ = writeln!(ctx.io.err, "No state in {}.", store.describe());
            EXIT_OK
        }
        Err(e) => {
            ctx.state_error(&e);
            EXIT_ERROR
        }
    }
}

/// Writes `pushed` over the state in `store` (locked by the caller): refuses another lineage
/// or a lower serial unless `force`. Returns the serial written.
fn push_into(store: &mut dyn StateStore, mut pushed: State, force: bool) -> Result<u64, String> {
    let current = store.read_stored().map_err(|e| e.to_string())?;
    let mut other_lineage = false;
    if let Some(cur) = &current {
        if cur.lineage != pushed.lineage {
            if !force {
                return Err(format!(
                    "the state in {} has lineage {}, the pushed state has lineage {}: they are different states, and pushing would replace the other one. Check that this is the right file and backend; pass --force to replace it anyway",
                    store.describe(), cur.lineage, pushed.lineage
                ));
            }
            other_lineage = true;
        } else if pushed.serial < cur.serial && !force {
            return Err(format!(
                "the state in {} has serial {}, newer than the pushed state's serial {}: pushing would lose what was written since. Pull the current state and compare; pass --force to replace it anyway",
                store.describe(), cur.serial, pushed.serial
            ));
        }
        // The stored serial must keep increasing.
        let next = cur.serial.checked_add(1).ok_or_else(|| kdeploy_state::StateError::SerialExhausted { serial: cur.serial }.to_string())?;
        pushed.serial = pushed.serial.max(next);
    }
    let result = if other_lineage { store.force_write(&pushed) } else { store.write(&pushed) };
    result.map_err(|e| e.to_string())?;
    Ok(pushed.serial)
}

fn state_push(ctx: &mut Ctx<'_, '_>, file: &Path, force: bool, timeout: std::time::Duration) -> i32 {
    let path = if file.is_absolute() { file.to_path_buf() } else { ctx.env.cwd.join(file) };
    let pushed = match crate::files::read(&path, crate::files::PLAN_LIMIT).map_err(|e| e.0).and_then(|b| kdeploy_state::decode(&b, &path.display().to_string()).map_err(|e| e.to_string())) {
        Ok(s) => s,
        Err(e) => {
            ctx.error("Cannot read the state to push", &format!("{}: {e}", path.display()));
            return EXIT_ERROR;
        }
    };
    let mut store = match state_store(ctx) {
        Ok(s) => s,
        Err(c) => return c,
    };
    if let Err(e) = store.lock(kdeploy_state::LockInfo::new("state push", VERSION), timeout) {
        ctx.state_error(&e);
        return EXIT_ERROR;
    }
    ctx.store_warnings(store.as_mut());
    let result = push_into(store.as_mut(), pushed, force);
    let _ = store.unlock();
    match result {
        Ok(serial) => {
            let _ = writeln!(ctx.io.out, "Pushed {} to {} (serial {serial}).", file.display(), store.describe());
            EXIT_OK
        }
        Err(e) => {
            ctx.error("Cannot push state", &e);
            EXIT_ERROR
        }
    }
}

/// `kdeploy init`: opens the configured backend (checking its settings and that it answers);
/// with -migrate-state, copies the previous backend's state into it, both locked meanwhile.
fn init_cmd(ctx: &mut Ctx<'_, '_>, migrate: bool, from: &[String], force: bool, timeout: std::time::Duration) -> i32 {
    let mut to = match state_store(ctx) {
        Ok(s) => s,
        Err(c) => return c,
    };
    if !migrate {
        if !from.is_empty() {
            ctx.error("Invalid options", "-from-backend-config needs -migrate-state");
            return EXIT_ERROR;
        }
        return match to.read_stored() {
            Ok(state) => {
                let what = match state {
                    Some(s) => format!("it holds serial {} of lineage {}", s.serial, s.lineage),
                    None => "it holds no state yet".to_string(),
                };
                let _ = writeln!(ctx.io.out, "The state backend is ready: {} ({what}).", to.describe());
                EXIT_OK
            }
            Err(e) => {
                ctx.state_error(&e);
                EXIT_ERROR
            }
        };
    }
    let mut from_config: BTreeMap<String, String> = match parse_pairs(from) {
        Ok(p) => p.into_iter().collect(),
        Err(bad) => {
            ctx.error("Invalid -from-backend-config", &format!("{bad:?}: use -from-backend-config KEY=VALUE"));
            return EXIT_ERROR;
        }
    };
    let kind = from_config.remove("type").unwrap_or_else(|| "local".to_string());
    let mut source = match engine::open_store(&kind, &from_config, &ctx.dir, &ctx.backend.env) {
        Ok(s) => s,
        Err(d) => {
            ctx.diags(&SourceMap::new(), &d.into());
            return EXIT_ERROR;
        }
    };
    if source.describe() == to.describe() {
        ctx.error("Nothing to migrate", &format!("the previous and the configured backend are the same ({}).", to.describe()));
        return EXIT_ERROR;
    }
    if let Err(e) = source.lock(kdeploy_state::LockInfo::new("init -migrate-state", VERSION), timeout) {
        ctx.state_error(&e);
        return EXIT_ERROR;
    }
    ctx.store_warnings(source.as_mut());
    if let Err(e) = to.lock(kdeploy_state::LockInfo::new("init -migrate-state", VERSION), timeout) {
        let _ = source.unlock();
        ctx.state_error(&e);
        return EXIT_ERROR;
    }
    ctx.store_warnings(to.as_mut());
    let result = match source.read_stored() {
        Ok(None) => Ok(None),
        Ok(Some(state)) => push_into(to.as_mut(), state, force).map(Some),
        Err(e) => Err(e.to_string()),
    };
    let _ = to.unlock();
    let _ = source.unlock();
    match result {
        Ok(Some(serial)) => {
            let _ = writeln!(ctx.io.out, "Migrated the state from {} to {} (serial {serial}).\nThe old state was left in place; delete it once you have checked the new backend (`kdeploy state list`).", source.describe(), to.describe());
            EXIT_OK
        }
        Ok(None) => {
            let _ = writeln!(ctx.io.out, "There is no state in {} to migrate; {} is ready.", source.describe(), to.describe());
            EXIT_OK
        }
        Err(e) => {
            ctx.error("Cannot migrate state", &e);
            EXIT_ERROR
        }
    }
}

//! The `kdeploy` command line: flags, views and exit codes. Business logic lives in
//! [`crate::engine`]; this module only chooses what to run and how to show it.

pub mod args;
pub mod dist;
pub mod fmt;
pub mod progress;

mod adopt_cmd;
mod apply_cmd;
mod dist_cmd;
mod drift_cmd;
mod graph_cmd;
mod import_cmd;
mod init_cmd;
mod plan_cmd;
mod show;
mod state_cmd;

use apply_cmd::{apply_file, apply_fresh};
use dist_cmd::{completion, man, version};
use drift_cmd::drift_cmd;
use graph_cmd::graph;
use init_cmd::init_cmd;
use plan_cmd::{make_plan, plan_cmd};
use show::{output, output_text, show, state_resource_text};
use state_cmd::{force_unlock, read_state, state_cmd, state_store};

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kdeploy_state::{Locked, State, StateError, StateStore};
use serde_json::json;
use tokio::sync::Notify;

use crate::addr::Target;
use crate::apply::{ApplyOptions, Outcome};
use crate::config::vars::VarArg;
use crate::diag::{Diagnostic, Diagnostics, SourceMap};
use crate::engine::{self, LoadError, Loaded, VERSION, VarSource};
use crate::plan::json::{plan_json, redacted};
use crate::plan::render::{self, Style};
use crate::plan::{Plan, PlanOptions, planfile};
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
    /// `-input`: whether kdeploy may ask (approval).
    input: bool,
    diagnostics_format: args::DiagnosticsFormat,
}

impl Ctx<'_, '_> {
    fn diags(&mut self, sources: &SourceMap, diags: &Diagnostics) {
        if self.diagnostics_format == args::DiagnosticsFormat::Github {
            let base = self.env.vars.get("GITHUB_WORKSPACE").map(PathBuf::from).unwrap_or_else(|| self.env.cwd.clone());
            for d in &diags.0 {
                let _ = writeln!(self.io.out, "{}", sources.github(d, &base));
            }
        }
        let text = if self.style.compact_warnings && !diags.has_errors() && !diags.is_empty() {
            crate::plan::render::compact_warnings(self.style, diags.0.iter().map(|d| d.summary.as_str()))
        } else {
            sources.render_all(diags, self.style.color)
        };
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
        // -var and -var-file apply in their command-line order: the later one wins.
        for slot in vars.slots() {
            match slot {
                args::VarSlot::Var(i) => match VarArg::parse_var(&vars.var[i]) {
                    Ok(a) => var_args.push(a),
                    Err(e) => errs.push(Diagnostic::error("Invalid -var option", e).hint("use -var NAME=VALUE")),
                },
                args::VarSlot::File(i) => {
                    let f = &vars.var_file[i];
                    var_args.push(VarArg::File(self.path(f)));
                }
            }
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
    let cli = match Cli::parse_ordered(args::normalize(args)) {
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
    let backend = engine::BackendOptions { overrides, env: env.vars.clone(), partition: None };
    let mut ctx = Ctx {
        io,
        env,
        dir,
        style: Style { color, compact_warnings: cli.compact_warnings },
        backend,
        input: cli.input,
        diagnostics_format: cli.diagnostics_format,
    };
    match cli.command {
        Command::Validate { json } => validate(&mut ctx, json),
        Command::Fmt { check, diff, write, recursive, files } => {
            let options = fmt::Options { check, diff, write: write && !check, recursive };
            fmt::run(&mut *ctx.io.out, &mut *ctx.io.err, &ctx.dir, &options, &files)
        }
        Command::Plan(p) => plan_cmd(&mut ctx, p).await,
        Command::Apply { plan_file: Some(f), plan: _, run } => apply_file(&mut ctx, &f, run).await,
        Command::Apply { plan_file: None, plan, run } => apply_fresh(&mut ctx, plan, run, false).await,
        Command::Destroy { plan, run } => apply_fresh(&mut ctx, plan, run, true).await,
        Command::Import { address, id, plan } => import_cmd::import_cmd(&mut ctx, &address, &id, plan).await,
        Command::Show { plan_file, json } => show(&mut ctx, plan_file.as_deref(), json),
        Command::Graph { format, vars } => graph(&mut ctx, format, &vars),
        Command::Adopt { cluster, out, vars } => adopt_cmd::adopt_cmd(&mut ctx, &cluster, out.as_deref(), &vars).await,
        Command::Drift(d) => drift_cmd(&mut ctx, d).await,
        Command::State(s) => state_cmd(&mut ctx, s),
        Command::Output { name, json, raw } => output(&mut ctx, name.as_deref(), json, raw),
        Command::ForceUnlock { id, even_if_running } => force_unlock(&mut ctx, &id, even_if_running),
        Command::Init { migrate_state, from_backend_config, force, lock_timeout } => {
            init_cmd(&mut ctx, migrate_state, &from_backend_config, force, lock_timeout)
        }
        Command::Version { json } => version(&mut ctx, json),
        Command::Completion { shell } => completion(&mut ctx, shell),
        Command::Man { out_dir } => man(&mut ctx, out_dir.as_deref()),
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

    /// Takes the store's lock and reads the state; errors and the store's warnings printed.
    fn lock(&mut self, store: Box<dyn StateStore>, operation: &str, timeout: std::time::Duration) -> Result<(Locked, State), i32> {
        self.opened(engine::lock_and_read(store, operation, timeout))
    }

    /// The state store opened (locked or not) and its state, or the error printed.
    fn opened(&mut self, result: Result<(Locked, State), StateError>) -> Result<(Locked, State), i32> {
        match result {
            Ok((mut store, state)) => {
                self.store_warnings(&mut *store);
                Ok((store, state))
            }
            Err(e) => {
                self.state_error(&e);
                Err(EXIT_ERROR)
            }
        }
    }

    /// Takes the store's lock without reading the state.
    fn lock_only(&mut self, store: Box<dyn StateStore>, operation: &str, timeout: std::time::Duration) -> Result<Locked, i32> {
        match Locked::acquire(store, kdeploy_state::LockInfo::new(operation, VERSION), timeout) {
            Ok(mut store) => {
                self.store_warnings(&mut *store);
                Ok(store)
            }
            Err(e) => {
                self.state_error(&e);
                Err(EXIT_ERROR)
            }
        }
    }

    /// Releases a lock, saying so when that fails (the next run would find it held).
    fn release(&mut self, store: Locked) {
        let location = store.describe();
        if let Err(e) = store.release() {
            let _ = writeln!(
                self.io.err,
                "Warning: could not release the state lock of {location}: {e}. If the next run finds it held, `kdeploy force-unlock ID` releases it."
            );
        }
    }

    /// A path given on the command line: as in Terraform, relative paths are relative to the
    /// -C directory (kdeploy switches to it before running the command).
    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_path_buf() } else { self.dir.join(p) }
    }

    /// `-C DIR ` when the stack directory is not the current one, so that a command kdeploy
    /// suggests runs as printed from where the user is.
    fn chdir_flag(&self) -> String {
        if self.dir == self.env.cwd {
            return String::new();
        }
        let dir = self.dir.strip_prefix(&self.env.cwd).map(Path::to_path_buf).unwrap_or_else(|_| self.dir.clone());
        let shown = dir.display().to_string();
        if shown.chars().any(|c| c.is_whitespace() || "'\"$`\\".contains(c)) {
            format!("-C '{}' ", shown.replace('\'', "'\\''"))
        } else {
            format!("-C {shown} ")
        }
    }

    /// Prints what the store has to say (e.g. an expired lock was taken over).
    fn store_warnings(&mut self, store: &mut dyn StateStore) {
        for w in store.take_warnings() {
            let _ = writeln!(self.io.err, "Warning: {w}");
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

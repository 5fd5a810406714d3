//! The engine: the only place where the phases are chained. Load and evaluate the stack,
//! build the graph, refresh and plan, apply. It takes locks and reads/writes state through a
//! [`StateStore`], and never formats output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kdeploy_provider::{AttrPath, ComponentRef, PlanRequest, Value, default_plan};
use kdeploy_state::{LockInfo, Locked, State, StateError, StateStore};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::addr::Address;
use crate::apply::{ApplyOptions, Coordinator, Finalizer, Outcome, Reporter};
use crate::config::Stack;
use crate::config::eval::Marked;
use crate::config::evaluator::Evaluator;
use crate::config::expand::{self, Expanded};
use crate::config::load::load_stack;
use crate::config::vars::{VarArg, root_values};
use crate::diag::{Diagnostic, Diagnostics, SourceMap};
use crate::graph::DepGraph;
use crate::plan::planner::{self, PlanInput};
use crate::plan::{Plan, PlanOptions};
use crate::providers::Providers;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A loaded and evaluated stack.
pub struct Loaded {
    pub dir: PathBuf,
    pub stack: Stack,
    pub sources: SourceMap,
    pub root_vars: BTreeMap<String, Marked>,
    pub expanded: Expanded,
    pub graph: DepGraph,
    /// Everything found while loading (errors included: a stack with errors still loads as
    /// far as it can, so that one run reports every problem).
    pub diags: Diagnostics,
}

/// A failed load: the diagnostics and the sources they point into.
pub struct LoadError {
    pub sources: SourceMap,
    pub diags: Diagnostics,
}

/// How variables are supplied.
#[derive(Debug, Clone, Default)]
pub enum VarSource {
    /// From -var/-var-file, the environment and *.auto.kdvars.
    #[default]
    Inputs,
    /// Exactly these values (a saved plan's).
    Fixed(BTreeMap<String, (Value, bool)>),
}

/// Loads the stack in `dir`, evaluates variables, expands instances and builds the graph.
/// `allow_missing_vars` treats required variables without a value as unknown (validate).
pub fn load(dir: &Path, args: &[VarArg], env: &BTreeMap<String, String>, vars: &VarSource, allow_missing_vars: bool) -> Result<Loaded, LoadError> {
    let mut sources = SourceMap::new();
    let (stack, mut diags) = load_stack(dir, &mut sources);
    // Syntax errors leave whole files out: evaluating the rest would only report echoes.
    if stack.modules.is_empty() || stack.incomplete {
        return Err(LoadError { sources, diags: diags.sorted() });
    }
    let mut vars_rejected = false;
    let root_vars = match vars {
        VarSource::Inputs => {
            let (values, d) = root_values(&stack, &mut sources, args, env, allow_missing_vars);
            vars_rejected = d.has_errors();
            diags.extend(d);
            values
        }
        VarSource::Fixed(values) => {
            values.iter().map(|(k, (v, s))| (k.clone(), if *s { Marked::secret(v.clone()) } else { Marked::plain(v.clone()) })).collect()
        }
    };
    let (expanded, d) = expand::expand(&stack, &sources, &root_vars);
    // A rejected variable value is unknown from there on: what only says so echoes that error.
    diags.extend(if vars_rejected { d.without_unknown_echoes() } else { d });
    diags.extend(crate::config::imports::check(&stack, &expanded));
    let (graph, d) = DepGraph::build(&expanded);
    diags.extend(d);
    Ok(Loaded { dir: dir.to_path_buf(), stack, sources, root_vars, expanded, graph, diags: diags.sorted() })
}

impl Loaded {
    /// Every error of the stack: loading problems plus what evaluating each component finds.
    /// None when the stack has no errors.
    pub fn errors(&self) -> Option<Diagnostics> {
        if !self.diags.has_errors() {
            return None;
        }
        let mut all = self.diags.clone();
        all.extend(self.check());
        Some(all.sorted())
    }

    /// Evaluates every component and output with every computed value unknown, as `validate`
    /// does: type errors, missing arguments and bad references are found without a provider.
    pub fn check(&self) -> Diagnostics {
        let mut diags = Diagnostics::new();
        let eval = self.evaluator();
        // Apply order first, then anything left out of it (nodes on a cycle), so every
        // component is checked.
        let mut order = self.graph.topo_order();
        let ordered: std::collections::BTreeSet<Address> = order.iter().cloned().collect();
        order.extend(self.expanded.instances.keys().filter(|a| !ordered.contains(*a)).cloned());
        for addr in order {
            match eval.desired(&addr) {
                Some(Ok(d)) => {
                    let refs = BTreeMap::new();
                    let planned = default_plan(&PlanRequest {
                        component: ComponentRef { address: addr.clone(), kind: addr.kind, type_name: d.type_name.clone() },
                        schema: d.schema,
                        prior: None,
                        recorded: None,
                        desired: &d.inputs,
                        cluster: None,
                        refs: &refs,
                        force_conflicts: false,
                    });
                    eval.record(&addr, &planned.planned, &d.planned_sensitive());
                }
                Some(Err(d)) => diags.extend(d),
                None => {}
            }
        }
        let ctx = eval.ctx();
        // Every local and every module output of every module instance, even when nothing
        // reads them yet, so that their errors (and cycles) are reported.
        for (path, inst) in &self.expanded.modules {
            let scope = ctx.scope(path);
            let config = &self.stack.modules[inst.module];
            for (name, expr) in &config.locals {
                if let Err(d) = scope.local_value(name, expr) {
                    diags.push(d);
                }
            }
            if !path.is_root() {
                for out in config.outputs.values() {
                    if let Err(d) = scope.eval(&out.value.expr, out.value.span.file) {
                        diags.push(d);
                    }
                }
            }
        }
        for out in self.stack.root().outputs.values() {
            if let Err(d) = eval.root_output(out) {
                diags.push(d);
            }
        }
        diags.sorted()
    }

    /// The evaluator of this stack's instances, starting with no component values.
    pub fn evaluator(&self) -> Evaluator<'_> {
        Evaluator::new(&self.stack, &self.sources, &self.root_vars, &self.expanded)
    }

    /// The evaluator over component values the caller keeps (apply's applied values).
    pub fn evaluator_over<'a>(&'a self, values: &'a BTreeMap<Address, Marked>) -> Evaluator<'a> {
        Evaluator::over(&self.stack, &self.sources, &self.root_vars, &self.expanded, values)
    }

    /// Digest of the stack's HCL sources (all modules), for stale-plan detection.
    pub fn sources_digest(&self) -> String {
        let mut files: Vec<(&str, &str)> = self.sources.files().filter(|(_, name, _)| name.ends_with(".hcl")).map(|(_, n, t)| (n, t)).collect();
        files.sort();
        let mut h = Sha256::new();
        for (name, text) in files {
            h.update(name.as_bytes());
            h.update([0]);
            h.update(text.as_bytes());
            h.update([0]);
        }
        format!("{:x}", h.finalize())
    }

    pub fn source_texts(&self) -> BTreeMap<String, String> {
        self.sources.files().filter(|(_, n, _)| n.ends_with(".hcl")).map(|(_, n, t)| (n.to_string(), t.to_string())).collect()
    }

    pub fn variables(&self) -> BTreeMap<String, (Value, bool)> {
        self.root_vars.iter().map(|(k, m)| (k.clone(), (m.value.clone(), m.is_sensitive()))).collect()
    }

    /// Where state lives: the stack's backend block or `<dir>/.kdeploy/state.json`.
    pub fn store(&self) -> Result<Box<dyn StateStore>, Diagnostic> {
        self.store_with(&BackendOptions { overrides: Vec::new(), env: std::env::vars().collect(), partition: None })
    }

    /// The backend kind and its settings: the stack's backend block (literal values only) with
    /// `-backend-config` overrides applied; `local` without a block.
    pub fn backend_config(&self, overrides: &[(String, String)]) -> Result<(String, BTreeMap<String, String>), Diagnostic> {
        let mut config = BTreeMap::new();
        let kind = match &self.stack.stack.backend {
            None => "local".to_string(),
            Some(b) => {
                for (k, e) in &b.config {
                    use hcl_edit::expr::Expression;
                    let v = match &e.expr {
                        Expression::String(s) => s.value().to_string(),
                        Expression::Number(n) => n.value().to_string(),
                        Expression::Bool(v) => v.value().to_string(),
                        _ => {
                            return Err(Diagnostic::error(
                                "Invalid backend configuration",
                                format!(
                                    "backend {:?}: {k} must be a literal string, number or bool (backend settings are read before anything else is evaluated).",
                                    b.kind
                                ),
                            )
                            .at(Some(e.span.clone()))
                            .hint("pass values that vary with -backend-config KEY=VALUE"));
                        }
                    };
                    config.insert(k.clone(), v);
                }
                b.kind.clone()
            }
        };
        for (k, v) in overrides {
            config.insert(k.clone(), v.clone());
        }
        Ok((kind, config))
    }

    /// The store of the configured backend, with `-backend-config` overrides, encrypting
    /// sensitive values with the key from `KDEPLOY_STATE_KEY`/`KDEPLOY_STATE_KEY_FILE` in `env`.
    /// With `stack { partition = "cluster" }` it is a [`kdeploy_state::PartitionedStore`] over
    /// every partition (see [`crate::partition`]), writing only `opts.partition` when given.
    pub fn store_with(&self, opts: &BackendOptions) -> Result<Box<dyn StateStore>, Diagnostic> {
        let (kind, config) = self.backend_config(&opts.overrides)?;
        let span = self.stack.stack.backend.as_ref().map(|b| b.span.clone());
        match (self.stack.stack.partition, &opts.partition) {
            (Some(crate::config::Partitioning::Cluster), _) => crate::partition::open_partitioned(self, &kind, &config, &self.dir, opts),
            (None, Some(p)) => Err(Diagnostic::error(
                "State is not partitioned",
                format!("-partition {p:?} selects a state partition, but this stack keeps one state for everything."),
            )
            .at(self.stack.stack.span.clone())
            .hint("add partition = \"cluster\" to the stack block to keep one state per cluster, or run without -partition")),
            (None, None) => {
                refuse_partitioned_state(&kind, &config, &self.dir).map_err(|d| d.at(self.stack.stack.span.clone()))?;
                open_store(&kind, &config, &self.dir, &opts.env).map_err(|d| d.at(span))
            }
        }
    }
}

/// A stack that kept one state per cluster and no longer says `partition = "cluster"`: the
/// single state its backend still has is the one from before the split, out of date, and a
/// plan against it would create again what runs and forget what the partitions recorded. The
/// run stops instead. A backend that cannot list its partitions is not stopped (an S3 bucket
/// may not grant listing to a stack that never used partitions).
fn refuse_partitioned_state(kind: &str, config: &BTreeMap<String, String>, dir: &Path) -> Result<(), Diagnostic> {
    let Ok(mut stored) = kdeploy_state::stored_partitions(kind, config, dir) else { return Ok(()) };
    stored.sort();
    if stored.is_empty() {
        return Ok(());
    }
    Err(Diagnostic::error(
        "State is partitioned",
        format!(
            "The {kind} backend keeps this stack's state in partitions ({}), but the stack block no longer says partition = \"cluster\". Without it, kdeploy would read the single state from before the split, which is out of date.",
            stored.join(", ")
        ),
    )
    .hint("put partition = \"cluster\" back in the stack block; to go back to one state, see \"Turning it off\" in the README's state partitions section"))
}

/// How the CLI opens the state store.
#[derive(Debug, Clone, Default)]
pub struct BackendOptions {
    /// `-backend-config KEY=VALUE`, in order (later wins).
    pub overrides: Vec<(String, String)>,
    /// The environment (for the state key).
    pub env: BTreeMap<String, String>,
    /// `-partition NAME`: the one state partition the run writes and locks.
    pub partition: Option<String>,
}

/// Opens a backend's store wrapped with sensitive-value encryption.
pub fn open_store(kind: &str, config: &BTreeMap<String, String>, dir: &Path, env: &BTreeMap<String, String>) -> Result<Box<dyn StateStore>, Diagnostic> {
    let inner = kdeploy_state::open_backend(kind, config, dir).map_err(|m| Diagnostic::error("Invalid backend configuration", m))?;
    let key = kdeploy_state::StateKey::from_env(env, dir).map_err(|e| Diagnostic::error("Cannot read the state key", e.to_string()))?;
    Ok(Box::new(kdeploy_state::CryptStore::new(inner, key)))
}

pub fn default_state_path(dir: &Path) -> PathBuf {
    dir.join(".kdeploy").join("state.json")
}

/// Takes the lock, reads the state (a new empty one when there is none). The lock is held
/// until the returned guard is released or dropped.
pub fn lock_and_read(store: Box<dyn StateStore>, operation: &str, timeout: Duration) -> Result<(Locked, State), StateError> {
    read(Locked::acquire(store, LockInfo::new(operation, VERSION), timeout)?)
}

/// Reads the state without taking the lock (`-lock=false`).
pub fn read_unlocked(store: Box<dyn StateStore>) -> Result<(Locked, State), StateError> {
    read(Locked::unlocked(store))
}

fn read(mut store: Locked) -> Result<(Locked, State), StateError> {
    let state = store.read()?.unwrap_or_else(|| State::new(VERSION));
    Ok((store, state))
}

/// Refreshes and plans.
pub async fn plan(loaded: &Loaded, state: &State, providers: &Providers, options: &PlanOptions) -> Result<Plan, Diagnostics> {
    let (mut plan, _) = planner::plan(PlanInput {
        stack: &loaded.stack,
        sources: &loaded.sources,
        root_vars: &loaded.root_vars,
        expanded: &loaded.expanded,
        graph: &loaded.graph,
        state,
        providers,
        options,
        kdeploy_version: VERSION,
    })
    .await?;
    plan.config_digest = loaded.sources_digest();
    plan.sources = loaded.source_texts();
    plan.variables = loaded.variables();
    Ok(plan)
}

/// Why a saved plan cannot be applied.
pub fn stale_reason(plan: &Plan, state: &State, loaded: &Loaded) -> Option<String> {
    match &plan.lineage {
        Some(l) if *l != state.lineage => {
            return Some(format!("the plan was made against state lineage {l}, but the state now has lineage {}", state.lineage));
        }
        None if state.serial > 0 && !state.resources.is_empty() => {
            return Some("the plan was made before any state existed, but state has been written since".into());
        }
        _ => {}
    }
    if plan.lineage.is_some() && plan.serial != state.serial {
        return Some(format!("the state changed since the plan was made (serial {} then, {} now)", plan.serial, state.serial));
    }
    if plan.config_digest != loaded.sources_digest() {
        return Some("the stack's source files changed since the plan was made".into());
    }
    None
}

/// Re-evaluates component inputs and outputs at apply time.
pub struct EngineFinalizer<'a> {
    pub loaded: &'a Loaded,
    /// The stack's clusters, listed once (listing them scans every instance: once per change
    /// made apply quadratic).
    pub clusters: Vec<Address>,
}

impl<'a> EngineFinalizer<'a> {
    pub fn new(loaded: &'a Loaded) -> EngineFinalizer<'a> {
        EngineFinalizer { loaded, clusters: loaded.expanded.clusters() }
    }
}

impl Finalizer for EngineFinalizer<'_> {
    fn inputs(&self, change: &crate::plan::Change, applied: &BTreeMap<Address, Marked>) -> Result<(Value, Vec<AttrPath>), String> {
        let l = self.loaded;
        let desired = match l.evaluator_over(applied).with_clusters(&self.clusters).desired(&change.address) {
            None => return Err(format!("{} is no longer in the stack", change.address)),
            Some(result) => result.map_err(|d| {
                d.0.iter()
                    .map(|d| format!("{} at {}: {}", d.summary, d.span.as_ref().map(|s| l.sources.location(s)).unwrap_or_default(), d.detail))
                    .collect::<Vec<_>>()
                    .join("; ")
            })?,
        };
        let inputs = desired.inputs_keeping_ignored(change.before.as_ref());
        Ok((inputs, desired.sensitive))
    }

    fn outputs(&self, applied: &BTreeMap<Address, Marked>) -> BTreeMap<String, (Value, bool)> {
        let l = self.loaded;
        let eval = l.evaluator_over(applied);
        let mut out = BTreeMap::new();
        for (name, o) in &l.stack.root().outputs {
            if let Ok(v) = eval.root_output(o)
                && !v.value.contains_unknown()
            {
                let s = o.sensitive || v.is_sensitive();
                out.insert(name.clone(), (v.value, s));
            }
        }
        out
    }
}

/// Applies a plan against `state` (already locked), persisting through `store`.
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    loaded: &Loaded,
    plan: &Plan,
    state: &mut State,
    store: &mut dyn StateStore,
    providers: &Providers,
    options: ApplyOptions,
    reporter: &mut dyn Reporter,
    interrupt: Arc<Notify>,
) -> Outcome {
    let finalizer = EngineFinalizer::new(loaded);
    let mut outcome =
        Coordinator { plan, state, store, providers, finalizer: &finalizer, reporter, options, interrupt, recorder: Default::default() }.run().await;
    // Prove the deployment works: every account of every recorded Vault answers.
    let changed = outcome.done.iter().any(|(_, a)| a.mutates());
    if changed && !plan.options.destroy && !outcome.interrupted {
        // A run of one partition checks only its own Vaults (the others may be out of reach).
        outcome.checks = match &plan.options.partition {
            Some(p) => planner::verify(&crate::partition::restrict(state, p), providers).await,
            None => planner::verify(state, providers).await,
        };
    }
    outcome
}
